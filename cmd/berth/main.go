// Command berth is a node-local, memory-bounded OCI registry mirror and
// pull-through cache. See the README for the commands.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is stamped at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `berth: a node-local OCI registry mirror and pull-through cache

Usage:
  berth serve [flags]                 run the mirror (berth serve -h for flags)
  berth health [--url URL]            exit 0 when the server answers /readyz with 200
                                      (a URL without a path, e.g. http://127.0.0.1:5000, probes /readyz)
  berth ctl [--socket PATH] COMMAND   control a running berth (berth ctl -h for commands)
  berth configure-containerd [flags]  write containerd hosts.toml files pointing at berth
  berth configure-registries [flags]  write a registries.conf.d drop-in (CRI-O, podman, buildah) pointing at berth
  berth version                       print the version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches a subcommand and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		defer stop()
		return runServe(ctx, args[1:], stderr)
	case "ctl":
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		defer stop()
		return runCtl(ctx, args[1:], os.Stdin, stdout, stderr)
	case "health":
		return runHealth(args[1:], stdout, stderr)
	case "configure-containerd":
		return runConfigureContainerd(args[1:], stdout, stderr)
	case "configure-registries":
		return runConfigureRegistries(args[1:], stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "berth", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "berth: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}
