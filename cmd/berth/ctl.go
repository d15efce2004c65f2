package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/berth-mirror/berth/internal/admin"
	"github.com/berth-mirror/berth/internal/config"
)

const ctlUsage = `usage: berth ctl [--socket PATH] [--json] COMMAND [ARGS]

Talks to a running berth over its admin socket (JSON-RPC 2.0).

Commands:
  status                                      the server's state
  ls [--repo R] [--prefix P] [--limit N]      cached content
  purge (--all | --repo R | DIGEST...)        delete cached content
  prefetch IMAGE... [--platform P]...         pull images into the cache
           [--no-wait]                        (a job; --no-wait prints its id)
  peers                                       cluster members
  reload                                      re-read the configuration
  call METHOD [PARAMS | @FILE | -]            call any method; PARAMS is JSON

The socket is --socket, else $BERTH_ADMIN_SOCKET, else admin.socket of the
file named by $BERTH_CONFIG, else /run/berth/admin.sock.
--json prints the method's result as is, for scripts.
Exit status: 0 ok, 1 failed (an error from berth, or an image that did not
prefetch), 2 usage.

Flags:
`

// errUsage marks a command-line mistake (exit 2); the message is printed.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// ctl is one invocation of berth ctl.
type ctl struct {
	socket  string
	json    bool
	stdin   io.Reader
	stdout  io.Writer
	stderr  io.Writer
	client  *admin.Client
	pollInt time.Duration
}

// runCtl implements `berth ctl` and returns the exit code.
func runCtl(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	c := &ctl{stdin: stdin, stdout: stdout, stderr: stderr, pollInt: 250 * time.Millisecond}
	fs := c.flags("ctl")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	err := c.run(ctx, fs.Arg(0), fs.Args()[1:])
	if c.client != nil {
		_ = c.client.Close()
	}
	var ue *usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "berth ctl: %s\n\n", ue.msg)
		fmt.Fprint(stderr, ctlUsage)
		return 2
	case errors.Is(err, errReported):
		return 1
	default:
		fmt.Fprintln(stderr, "berth ctl:", err)
		return 1
	}
}

// errReported is a failure already described on the output.
var errReported = errors.New("failed")

// flags returns a flag set with the options every command accepts.
func (c *ctl) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.Usage = func() {
		fmt.Fprint(c.stderr, ctlUsage)
		fs.PrintDefaults()
	}
	fs.StringVar(&c.socket, "socket", c.socket, "admin socket `PATH`")
	fs.BoolVar(&c.json, "json", c.json, "print the method's result as JSON")
	return fs
}

// parse parses a command's flags, which may come before, between or after
// its arguments, and returns the arguments.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usagef("%s: %v", fs.Name(), err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func (c *ctl) run(ctx context.Context, cmd string, args []string) error {
	switch cmd {
	case "status":
		return c.status(ctx, args)
	case "ls":
		return c.ls(ctx, args)
	case "purge":
		return c.purge(ctx, args)
	case "prefetch":
		return c.prefetch(ctx, args)
	case "peers":
		return c.peers(ctx, args)
	case "reload":
		return c.reload(ctx, args)
	case "call":
		return c.call(ctx, args)
	case "help":
		fmt.Fprint(c.stdout, ctlUsage)
		return nil
	}
	return usagef("unknown command %q", cmd)
}

// noArgs parses a command that takes no arguments.
func (c *ctl) noArgs(name string, args []string) error {
	pos, err := parse(c.flags(name), args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("%s takes no arguments, got %q", name, pos[0])
	}
	return nil
}

// socketPath resolves where to connect.
func (c *ctl) socketPath() string {
	if c.socket != "" {
		return c.socket
	}
	if s := os.Getenv("BERTH_ADMIN_SOCKET"); s != "" {
		return s
	}
	if f := os.Getenv("BERTH_CONFIG"); f != "" {
		if cfg, err := config.Load(f, os.LookupEnv); err == nil && cfg.Admin.Socket != "" {
			return cfg.Admin.Socket
		}
	}
	return config.Default().Admin.Socket
}

// callRaw calls method, connecting on first use.
func (c *ctl) callRaw(ctx context.Context, method string, params any) (json.RawMessage, error) {
	if c.client == nil {
		path := c.socketPath()
		cl, err := admin.Dial(ctx, path)
		if err != nil {
			return nil, fmt.Errorf("cannot reach berth at %s: %w (is berth serve running? set --socket or BERTH_ADMIN_SOCKET)", path, errors.Unwrap(err))
		}
		c.client = cl
	}
	var raw json.RawMessage
	switch p := params.(type) {
	case nil:
	case json.RawMessage:
		raw = p
	default:
		b, err := json.Marshal(p)
		if err != nil {
			return nil, err
		}
		raw = b
	}
	res, err := c.client.CallRaw(ctx, method, raw)
	var e *admin.Error
	if errors.As(err, &e) {
		return nil, fmt.Errorf("%s: %s (code %d)", method, e.Message, e.Code)
	}
	return res, err
}

// callInto calls method; with --json it prints the result as is and
// returns done=true, else it decodes the result into v.
func (c *ctl) callInto(ctx context.Context, method string, params, v any) (done bool, err error) {
	res, err := c.callRaw(ctx, method, params)
	if err != nil {
		return false, err
	}
	if c.json {
		return true, c.printJSON(res)
	}
	return false, json.Unmarshal(res, v)
}

func (c *ctl) printJSON(res json.RawMessage) error {
	_, err := fmt.Fprintf(c.stdout, "%s\n", res)
	return err
}

func (c *ctl) table() *tabwriter.Writer {
	return tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
}

func (c *ctl) status(ctx context.Context, args []string) error {
	if err := c.noArgs("status", args); err != nil {
		return err
	}
	var st admin.Status
	if done, err := c.callInto(ctx, "status", nil, &st); done || err != nil {
		return err
	}
	max := "unbounded"
	if st.Store.MaxBytes > 0 {
		max = humanBytes(st.Store.MaxBytes)
	}
	memlimit := "none"
	if st.GoMemLimit > 0 {
		memlimit = humanBytes(st.GoMemLimit)
	}
	tw := c.table()
	fmt.Fprintf(tw, "version\t%s\n", st.Version)
	fmt.Fprintf(tw, "uptime\t%s\n", st.Uptime)
	fmt.Fprintf(tw, "listen\t%s\n", st.Listen)
	fmt.Fprintf(tw, "store\t%s in %s (max %s)\n", humanBytes(st.Store.Bytes), plural(st.Store.Objects, "object"), max)
	fmt.Fprintf(tw, "fetches in flight\t%d\n", st.FetchesInFlight)
	fmt.Fprintf(tw, "prefetch jobs running\t%d\n", st.JobsRunning)
	fmt.Fprintf(tw, "upstreams\t%d\n", st.Upstreams)
	fmt.Fprintf(tw, "memory\tRSS %s, GOMEMLIMIT %s\n", humanBytes(st.RSS), memlimit)
	return tw.Flush()
}

func (c *ctl) ls(ctx context.Context, args []string) error {
	fs := c.flags("ls")
	var p admin.ListParams
	fs.StringVar(&p.Repository, "repo", "", "only content of `REPOSITORY` (registry/name, or a name routed as pulls are)")
	fs.StringVar(&p.DigestPrefix, "prefix", "", "only digests starting with `PREFIX`")
	limit := fs.Int("limit", 0, "show at most `N` objects (0: all)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("ls takes no arguments, got %q", pos[0])
	}
	if *limit < 0 {
		return usagef("ls: --limit must be >= 0")
	}
	all := admin.ListResult{Items: []admin.CacheItem{}}
	for {
		p.Limit = 1000
		if *limit > 0 {
			p.Limit = min(1000, *limit-len(all.Items))
		}
		var page admin.ListResult
		res, err := c.callRaw(ctx, "cache.list", p)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(res, &page); err != nil {
			return err
		}
		all.Items = append(all.Items, page.Items...)
		all.NextCursor = page.NextCursor
		if page.NextCursor == "" || (*limit > 0 && len(all.Items) >= *limit) {
			break
		}
		p.Cursor = page.NextCursor
	}
	if c.json {
		b, err := json.Marshal(all)
		if err != nil {
			return err
		}
		return c.printJSON(b)
	}
	return c.printList(all)
}

func (c *ctl) printList(l admin.ListResult) error {
	tw := c.table()
	fmt.Fprintln(tw, "DIGEST\tKIND\tSIZE\tREPOSITORY\tLAST ACCESS")
	var total int64
	for _, it := range l.Items {
		kind := "blob"
		if it.Manifest {
			kind = "manifest"
		}
		total += it.Size
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", it.Digest, kind, humanBytes(it.Size), orDash(it.Repository),
			it.LastAccess.UTC().Format("2006-01-02 15:04:05"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	more := ""
	if l.NextCursor != "" {
		more = " (more: raise --limit)"
	}
	_, err := fmt.Fprintf(c.stdout, "%s, %s%s\n", plural(len(l.Items), "object"), humanBytes(total), more)
	return err
}

func (c *ctl) purge(ctx context.Context, args []string) error {
	fs := c.flags("purge")
	var p admin.PurgeParams
	fs.BoolVar(&p.All, "all", false, "purge everything")
	fs.StringVar(&p.Repository, "repo", "", "purge the content of `REPOSITORY`")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	p.Digests = pos
	n := 0
	for _, set := range []bool{p.All, p.Repository != "", len(pos) > 0} {
		if set {
			n++
		}
	}
	if n != 1 {
		return usagef("purge: give exactly one of --all, --repo REPOSITORY or DIGEST...")
	}
	var res admin.PurgeResult
	if done, err := c.callInto(ctx, "cache.purge", p, &res); done || err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "purged %s (%s)", plural(res.Purged, "object"), humanBytes(res.Bytes))
	if res.Missing > 0 {
		fmt.Fprintf(c.stdout, "; %d not cached", res.Missing)
	}
	fmt.Fprintln(c.stdout)
	return nil
}

func (c *ctl) peers(ctx context.Context, args []string) error {
	if err := c.noArgs("peers", args); err != nil {
		return err
	}
	var res admin.Peers
	if done, err := c.callInto(ctx, "peers.list", nil, &res); done || err != nil {
		return err
	}
	tw := c.table()
	fmt.Fprintln(tw, "NAME\tADDRESS\tURL\tSTATE\tSERVED") // SERVED: bytes the member sent this node
	var conflicts []string
	for _, m := range res.Members {
		name, state := m.Name, m.State
		if m.Self {
			name += " (this node)"
		}
		if m.Conflict != "" {
			conflicts = append(conflicts, m.Conflict)
			if state != "conflict" {
				state += " (name conflict)"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", name, m.Address, m.URL, state, humanBytes(m.ServedBytes))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, cf := range conflicts {
		fmt.Fprintln(c.stdout, "conflict:", cf)
	}
	if res.Note != "" {
		fmt.Fprintln(c.stdout, "note:", res.Note)
	}
	return nil
}

func (c *ctl) reload(ctx context.Context, args []string) error {
	if err := c.noArgs("reload", args); err != nil {
		return err
	}
	var res admin.ReloadResult
	if done, err := c.callInto(ctx, "config.reload", nil, &res); done || err != nil {
		return err
	}
	if len(res.Applied) == 0 && len(res.RestartRequired) == 0 {
		fmt.Fprintln(c.stdout, "configuration reloaded: nothing changed")
		return nil
	}
	fmt.Fprintf(c.stdout, "applied: %s\n", orNone(res.Applied))
	fmt.Fprintf(c.stdout, "restart required: %s\n", orNone(res.RestartRequired))
	return nil
}

func (c *ctl) call(ctx context.Context, args []string) error {
	pos, err := parse(c.flags("call"), args)
	if err != nil {
		return err
	}
	if len(pos) < 1 || len(pos) > 2 {
		return usagef("call: give METHOD and at most one PARAMS")
	}
	var params json.RawMessage
	if len(pos) == 2 {
		if params, err = c.readParams(pos[1]); err != nil {
			return err
		}
	}
	res, err := c.callRaw(ctx, pos[0], params)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(res)
	}
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	return c.printJSON(b)
}

// readParams reads PARAMS: JSON text, @FILE or - for standard input.
func (c *ctl) readParams(arg string) (json.RawMessage, error) {
	var b []byte
	var err error
	switch {
	case arg == "-":
		b, err = io.ReadAll(c.stdin)
	case strings.HasPrefix(arg, "@"):
		b, err = os.ReadFile(arg[1:])
	default:
		b = []byte(arg)
	}
	if err != nil {
		return nil, fmt.Errorf("reading params: %w", err)
	}
	if !json.Valid(b) {
		return nil, usagef("call: PARAMS is not valid JSON")
	}
	return b, nil
}

// plural writes "1 object", "2 objects".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func orNone(list []string) string {
	if len(list) == 0 {
		return "none"
	}
	return strings.Join(list, ", ")
}

// humanBytes writes n in binary units: 512 B, 1.5 KiB, 20.0 GiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
