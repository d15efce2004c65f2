package main

import (
	"errors"
	"flag"
	"io"
	"sort"
	"strings"

	"github.com/berth-mirror/berth/internal/config"
	"github.com/berth-mirror/berth/internal/hostsconf"
)

const configureRegistriesUsage = `usage: berth configure-registries [flags]

Writes a containers-registries.conf(5) drop-in (default
/etc/containers/registries.conf.d/50-berth.conf) so that CRI-O, podman, buildah
and skopeo pull each registry through berth as a mirror, the registry itself
kept as the fallback. A registry whose name has a port is mirrored through its
prefix name (upstreams.NAME.prefix, or --prefix). --undo removes the file and
restores a backup of the one it replaced.

Registries: those of --config (built-ins plus its upstreams, with their
prefixes) when given, plus every --registry; with neither, the built-ins.

flags:
`

// runConfigureRegistries implements `berth configure-registries`. It returns
// the exit code: 0 done, 2 bad flags or configuration, 1 failure.
func runConfigureRegistries(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("configure-registries", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		confPrintf(stderr, "%s", configureRegistriesUsage)
		fs.PrintDefaults()
	}
	opts := hostsconf.RegistriesOptions{}
	fs.StringVar(&opts.Path, "file", hostsconf.DefaultRegistriesDropIn, "the drop-in `FILE` to write")
	fs.StringVar(&opts.MirrorURL, "mirror-url", hostsconf.DefaultMirrorURL, "berth's URL as the node's runtimes reach it")
	configFile := fs.String("config", "", "berth config `FILE` whose upstreams (and prefixes) are the registries to configure")
	undo := fs.Bool("undo", false, "remove berth's drop-in and restore the file it replaced")
	extra := registryFlag(fs, "image references name")
	prefixes := map[string]string{}
	fs.Func("prefix", "`NAME=PREFIX` berth's prefix name for a registry (upstreams.NAME.prefix; repeatable)", func(s string) error {
		name, p, ok := strings.Cut(s, "=")
		if !ok {
			return errors.New("expected NAME=PREFIX, e.g. registry.corp:5000=corp")
		}
		prefixes[strings.TrimSpace(name)] = strings.TrimSpace(p)
		return nil
	})
	if code, ok := parseConfigureFlags(fs, args, stderr); !ok {
		return code
	}
	var res hostsconf.Result
	var err error
	if *undo {
		res, err = hostsconf.UndoRegistries(opts.Path)
	} else {
		regs, code := registriesToMirror(*configFile, *extra, prefixes, stderr)
		if code != 0 {
			return code
		}
		opts.Registries = regs
		res, err = hostsconf.ConfigureRegistries(opts)
	}
	printResult(stdout, stderr, res)
	if err != nil {
		confPrintf(stderr, "berth configure-registries: %v\n", err)
		if errors.Is(err, hostsconf.ErrInvalidOptions) {
			return 2
		}
		return 1
	}
	return 0
}

// registriesToMirror returns the registries to write, with their prefixes.
func registriesToMirror(file string, extra []string, prefixes map[string]string, stderr io.Writer) ([]hostsconf.Registry, int) {
	urls, code := configureRegistries(file, extra, stderr)
	if code != 0 {
		return nil, code
	}
	if file != "" {
		cfg, err := config.Load(file, nil)
		if err != nil {
			confPrintf(stderr, "berth configure-registries: %v\n", err)
			return nil, 2
		}
		for name, u := range cfg.Upstreams {
			if _, set := prefixes[name]; !set && u.Prefix != "" {
				prefixes[name] = u.Prefix
			}
		}
	}
	regs := make([]hostsconf.Registry, 0, len(urls))
	for name, u := range urls {
		regs = append(regs, hostsconf.Registry{Name: name, URL: u, Prefix: prefixes[name]})
	}
	sort.Slice(regs, func(i, j int) bool { return regs[i].Name < regs[j].Name })
	return regs, 0
}
