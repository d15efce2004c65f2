package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/berth-mirror/berth/internal/config"
	"github.com/berth-mirror/berth/internal/hostsconf"
)

const configureUsage = `usage: berth configure-containerd [flags]

Writes <config-path>/<registry>/hosts.toml for each registry so that the node's
containerd pulls through berth and falls back to the registry itself when berth
is down. Files that are not berth's are backed up to hosts.toml.berth-backup
first. --undo restores the backups and removes berth's files.

Registries: those of --config (built-ins plus its upstreams) when given, plus
every --registry; with neither, the built-in registries.

It then reads containerd's own config (--containerd-config; version 2 or 3)
and warns when the CRI plugin would not read --config-path: config_path
missing or different in the section containerd reads for that version.

flags:
`

// runConfigureContainerd implements `berth configure-containerd`. It returns
// the exit code: 0 done, 2 bad flags or configuration, 1 failure.
func runConfigureContainerd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("configure-containerd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		confPrintf(stderr, "%s", configureUsage)
		fs.PrintDefaults()
	}
	opts := hostsconf.Options{}
	fs.StringVar(&opts.ConfigPath, "config-path", hostsconf.DefaultConfigPath, "containerd's hosts directory (its registry config_path)")
	fs.StringVar(&opts.MirrorURL, "mirror-url", hostsconf.DefaultMirrorURL, "berth's URL as containerd on this node reaches it")
	fs.DurationVar(&opts.DialTimeout, "dial-timeout", hostsconf.DefaultDialTimeout, "how long containerd waits to connect to berth before falling back")
	configFile := fs.String("config", "", "berth config `FILE` whose upstreams are the registries to configure")
	undo := fs.Bool("undo", false, "restore backups and remove berth's hosts.toml files")
	dataDir := fs.String("data-dir", "", "also create `DIR` (berth's data dir) and give it to --data-owner")
	dataOwner := fs.String("data-owner", "65532:65532", "`UID:GID` that owns --data-dir")
	ctdConfig := fs.String("containerd-config", hostsconf.DefaultContainerdConfig, "containerd's config `FILE`, checked for config_path (empty: no check)")
	extra := registryFlag(fs, "containerd names")
	if code, ok := parseConfigureFlags(fs, args, stderr); !ok {
		return code
	}
	if *dataDir != "" {
		if code := prepareDataDir(*dataDir, *dataOwner, stdout, stderr); code != 0 {
			return code
		}
	}
	var res hostsconf.Result
	var err error
	if *undo {
		res, err = hostsconf.Undo(opts)
	} else {
		regs, code := configureRegistries(*configFile, *extra, stderr)
		if code != 0 {
			return code
		}
		opts.Registries = regs
		res, err = hostsconf.Configure(opts)
		if err == nil && *ctdConfig != "" {
			var problems []string
			problems, err = hostsconf.CheckContainerdConfig(*ctdConfig, opts.ConfigPath)
			res.Warnings = append(res.Warnings, problems...)
		}
	}
	printResult(stdout, stderr, res)
	if err != nil {
		confPrintf(stderr, "berth configure-containerd: %v\n", err)
		if errors.Is(err, hostsconf.ErrInvalidOptions) {
			return 2
		}
		return 1
	}
	return 0
}

// configureRegistries returns the registry -> endpoint map to write, or a
// non-zero exit code after printing why.
func configureRegistries(file string, extra []string, stderr io.Writer) (map[string]string, int) {
	regs := map[string]string{}
	switch {
	case file != "":
		cfg, err := config.Load(file, nil)
		if err == nil {
			err = cfg.Validate()
		}
		if err != nil {
			confPrintf(stderr, "berth configure-containerd: %v\n", err)
			return nil, 2
		}
		for name, u := range cfg.Upstreams {
			regs[name] = u.URL
		}
	case len(extra) == 0:
		regs = config.Builtins()
	}
	for _, kv := range extra {
		name, u, _ := strings.Cut(kv, "=")
		regs[strings.TrimSpace(name)] = strings.TrimSpace(u)
	}
	return regs, 0
}

func printResult(stdout, stderr io.Writer, res hostsconf.Result) {
	for _, g := range []struct {
		verb  string
		paths []string
	}{
		{"backed up", res.BackedUp},
		{"written", res.Written},
		{"unchanged", res.Unchanged},
		{"restored", res.Restored},
		{"removed", res.Removed},
	} {
		for _, p := range g.paths {
			confPrintf(stdout, "%s %s\n", g.verb, p)
		}
	}
	for _, w := range res.Warnings {
		confPrintf(stderr, "warning: %s\n", w)
	}
}

// prepareDataDir creates dir and hands it to owner (UID:GID). The image has no
// shell or chown, so the init container that writes hosts.toml does this too;
// it needs CAP_CHOWN only while the owner is wrong.
func prepareDataDir(dir, owner string, stdout, stderr io.Writer) int {
	us, gs, ok := strings.Cut(owner, ":")
	uid, uerr := strconv.Atoi(us)
	gid, gerr := strconv.Atoi(gs)
	if !ok || uerr != nil || gerr != nil || uid < 0 || gid < 0 {
		confPrintf(stderr, "berth configure-containerd: --data-owner %q: expected numeric UID:GID such as 65532:65532\n", owner)
		return 2
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		confPrintf(stderr, "berth configure-containerd: %v\n", err)
		return 1
	}
	fi, err := os.Stat(dir)
	if err != nil {
		confPrintf(stderr, "berth configure-containerd: %v\n", err)
		return 1
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) == uid && int(st.Gid) == gid {
		confPrintf(stdout, "unchanged %s\n", dir)
		return 0
	}
	// chmod while root still owns it: after the chown that would need CAP_FOWNER.
	if err := os.Chmod(dir, 0o750); err != nil {
		confPrintf(stderr, "berth configure-containerd: %v\n", err)
		return 1
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		confPrintf(stderr, "berth configure-containerd: %v (needs CAP_CHOWN)\n", err)
		return 1
	}
	confPrintf(stdout, "owned %s %d:%d\n", dir, uid, gid)
	return 0
}

// confPrintf writes a line of output; a failed write to stdout or stderr has
// nowhere better to be reported.
func confPrintf(w io.Writer, format string, a ...any) {
	_, _ = fmt.Fprintf(w, format, a...)
}

// registryFlag adds the repeatable --registry NAME=URL flag of the configure
// commands; who names the registry (containerd, image references) goes in
// its help.
func registryFlag(fs *flag.FlagSet, namedBy string) *[]string {
	var extra []string
	fs.Func("registry", "`NAME=URL` registry as "+namedBy+" it and its real endpoint (repeatable)", func(s string) error {
		if _, _, ok := strings.Cut(s, "="); !ok {
			return errors.New("expected NAME=URL, e.g. docker.io=https://registry-1.docker.io")
		}
		extra = append(extra, s)
		return nil
	})
	return &extra
}

// parseConfigureFlags parses a configure command's flags, which take no
// arguments; !ok: exit with code (0 for -h).
func parseConfigureFlags(fs *flag.FlagSet, args []string, stderr io.Writer) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	if fs.NArg() > 0 {
		confPrintf(stderr, "berth %s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return 2, false
	}
	return 0, true
}
