package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proc is a subprocess started by a test and stopped by its PID.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string // file holding its stderr (and stdout unless redirected)

	done    chan struct{} // closed when the process has exited
	mu      sync.Mutex
	waitErr error
}

// startProc starts bin with args. stdout goes to outPath (or the log when
// empty), stderr to logPath.
func startProc(t *testing.T, name, logPath, outPath string, env []string, bin string, args ...string) (*proc, error) {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	outf := logf
	if outPath != "" {
		if outf, err = os.Create(outPath); err != nil {
			return nil, err
		}
		defer outf.Close()
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = outf, logf
	cmd.Env = env
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitCode is the process's exit code once it has ended (-1 for a signal).
func (p *proc) exitCode() int {
	<-p.done
	return p.cmd.ProcessState.ExitCode()
}

// signal sends sig to the process by its PID.
func (p *proc) signal(sig syscall.Signal) {
	if !p.exited() {
		_ = syscall.Kill(p.cmd.Process.Pid, sig)
	}
}

// wait waits up to d for the process to end.
func (p *proc) wait(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// stop sends SIGTERM, then SIGKILL after grace, and returns the exit code.
func (p *proc) stop(grace time.Duration) int {
	p.signal(syscall.SIGTERM)
	if !p.wait(grace) {
		p.signal(syscall.SIGKILL)
		<-p.done
	}
	return p.exitCode()
}

// tail returns the last n lines of the process's log.
func (p *proc) tail(n int) string { return tailFile(p.log, n) }

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("… %d earlier lines in %s", len(lines)-n, path)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitHTTP polls url until it answers want, the process ends or d passes.
func waitHTTP(p *proc, url string, want int, d time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(d)
	var last string
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("%s exited (code %d) before %s answered %d", p.name, p.exitCode(), url, want)
		}
		resp, err := client.Get(url)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == want {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer %d within %s (last: %s)", url, want, d, last)
}

// testEnv is the environment for subprocesses: the test's own minus
// anything that could reconfigure them (BERTH_*, OCI_*, proxies).
func testEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "BERTH_"), strings.HasPrefix(k, "OCI_"), strings.EqualFold(k, "GOMEMLIMIT"),
			strings.EqualFold(k, "http_proxy"), strings.EqualFold(k, "https_proxy"),
			strings.EqualFold(k, "no_proxy"), strings.EqualFold(k, "all_proxy"):
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// ---------------------------------------------------------------------------
// Upstream: distribution's docker-registry.

// upstreamRegistry is a docker-registry on 127.0.0.1.
type upstreamRegistry struct {
	*proc
	Addr      string // 127.0.0.1:PORT
	accessLog string // its stdout: one combined-log line per request
}

const registryConfig = `version: 0.1
log: {level: info, formatter: text}
storage: {filesystem: {rootdirectory: %s}, delete: {enabled: true}}
http: {addr: %s, secret: berth-e2e-secret}
`

// startRegistry starts docker-registry on a free port with an empty store
// and stops it when the test ends.
func startRegistry(t *testing.T, bin string) *upstreamRegistry {
	t.Helper()
	dir := t.TempDir()
	var lastErr error
	for range 3 {
		addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		cfg := filepath.Join(dir, "config.yml")
		if err := os.WriteFile(cfg, fmt.Appendf(nil, registryConfig, filepath.Join(dir, "data"), addr), 0o600); err != nil {
			t.Fatal(err)
		}
		access := filepath.Join(dir, "access.log")
		p, err := startProc(t, "docker-registry", filepath.Join(dir, "registry.log"), access, testEnv(), bin, "serve", cfg)
		if err != nil {
			t.Fatal(err)
		}
		r := &upstreamRegistry{proc: p, Addr: addr, accessLog: access}
		lastErr = waitHTTP(p, "http://"+addr+"/v2/", http.StatusOK, 20*time.Second)
		if lastErr == nil && !r.logged(`"GET /v2/ HTTP/1.1" 200`) {
			lastErr = fmt.Errorf("something else answers on %s", addr)
		}
		if lastErr == nil {
			t.Cleanup(func() {
				r.stop(10 * time.Second)
				if t.Failed() {
					t.Logf("docker-registry access log (tail):\n%s", tailFile(access, 30))
				}
			})
			return r
		}
		p.stop(5 * time.Second)
		t.Logf("docker-registry on %s did not start (%v), retrying:\n%s", addr, lastErr, p.tail(10))
	}
	t.Fatalf("docker-registry did not start: %v", lastErr)
	return nil
}

// logged reports whether the access log has a line containing s, waiting
// for it as long as a loaded machine may need.
func (r *upstreamRegistry) logged(s string) bool {
	return eventually(logWait, func() bool {
		b, err := os.ReadFile(r.accessLog)
		return err == nil && bytes.Contains(b, []byte(s))
	})
}

// logWait bounds a wait for a log line that is due: the waits end when the
// line appears, and only a failure takes this long.
const logWait = 60 * time.Second

// eventually polls cond until it holds or d passes, and reports whether it
// held.
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// syncPathPrefix marks the sentinel requests of sync.
const syncPathPrefix = "/v2/berth-e2e-sync/manifests/"

// sync makes the registry answer a request of the test's own and waits for
// its access log line. The registry logs each request as its response
// completes, so every request answered before the sentinel (everything berth
// fetched for a client that has its bytes) is in the log once sync returns:
// counts read after it are settled, with no guess at how long "settled" is.
func (r *upstreamRegistry) sync(t *testing.T) {
	t.Helper()
	path := syncPathPrefix + strconv.FormatInt(time.Now().UnixNano(), 36)
	resp, err := http.Get("http://" + r.Addr + path)
	if err != nil {
		t.Fatalf("registry sentinel request: %v", err)
	}
	_ = resp.Body.Close()
	if !r.logged(`"GET ` + path + ` HTTP/1.1"`) {
		t.Fatalf("the registry did not log the sentinel request %s within %s", path, logWait)
	}
}

// requestLines returns the access log's API request lines, sentinels and
// readiness probes left out.
func (r *upstreamRegistry) requestLines(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(r.accessLog)
	if err != nil {
		t.Fatalf("reading the registry access log: %v", err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if accessLineRE.MatchString(line) && !strings.Contains(line, syncPathPrefix) && !strings.Contains(line, `"GET /v2/ HTTP/1.1"`) {
			out = append(out, line)
		}
	}
	return out
}

// blobGets counts successful GETs of repo's blob dg in the access log. The
// registry writes a line when a response completes, so callers that need a
// settled count use waitBlobGets.
func (r *upstreamRegistry) blobGets(t *testing.T, repo, dg string) int {
	t.Helper()
	b, err := os.ReadFile(r.accessLog)
	if err != nil {
		t.Fatalf("reading the registry access log: %v", err)
	}
	needle := []byte(fmt.Sprintf(`"GET /v2/%s/blobs/%s HTTP/1.1" 200 `, repo, dg))
	return bytes.Count(b, needle)
}

// allBlobGets counts every blob GET for repo in the access log.
func (r *upstreamRegistry) allBlobGets(t *testing.T, repo string) int {
	t.Helper()
	b, err := os.ReadFile(r.accessLog)
	if err != nil {
		t.Fatalf("reading the registry access log: %v", err)
	}
	re := regexp.MustCompile(`"GET /v2/` + regexp.QuoteMeta(repo) + `/blobs/[a-z0-9]+:[a-f0-9]+ HTTP/1\.1"`)
	return len(re.FindAll(b, -1))
}

// settledBlobGets returns the count of blobGets once every request answered
// so far is logged (see sync).
func (r *upstreamRegistry) settledBlobGets(t *testing.T, repo, dg string) int {
	t.Helper()
	r.sync(t)
	return r.blobGets(t, repo, dg)
}

// ---------------------------------------------------------------------------
// berth.

// berth is a running `berth serve`.
type berth struct {
	*proc
	Addr    string // 127.0.0.1:PORT
	URL     string // http://127.0.0.1:PORT
	DataDir string
	trap    *connTrap
}

// berthOptions tune startBerth.
type berthOptions struct {
	// DataDir is reused when set (restarts); otherwise a temporary one.
	DataDir string
	// Args are extra flags for `berth serve`.
	Args []string
	// Env are extra environment variables (BERTH_*).
	Env []string
}

// startBerth runs berth with registry.test and registry.test:5000 mapped to
// the upstream at upstreamAddr, waits for /readyz and stops it when the test
// ends. Its HTTP(S)_PROXY is a trap: any connection berth tries to a host
// that is not loopback lands there and fails the test.
func startBerth(t *testing.T, upstreamAddr string, o berthOptions) *berth {
	t.Helper()
	if o.DataDir == "" {
		o.DataDir = filepath.Join(t.TempDir(), "data")
	}
	trap := newConnTrap(t)
	dir := t.TempDir()
	var lastErr error
	for attempt := range 3 {
		addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		args := append([]string{"serve",
			"--listen", addr,
			"--data-dir", o.DataDir,
			"--admin-socket", filepath.Join(dir, "admin.sock"),
			"--upstream", "registry.test=http://" + upstreamAddr,
			"--upstream", "registry.test:5000=http://" + upstreamAddr,
			"--default-upstream", "registry.test",
			"--log-format", "json",
			"--log-level", "debug",
		}, o.Args...)
		env := testEnv(append([]string{
			"HTTP_PROXY=http://" + trap.Addr(), "HTTPS_PROXY=http://" + trap.Addr(),
		}, o.Env...)...)
		logPath := filepath.Join(dir, fmt.Sprintf("berth-%d.log", attempt))
		p, err := startProc(t, "berth", logPath, "", env, berthBin, args...)
		if err != nil {
			t.Fatal(err)
		}
		b := &berth{proc: p, Addr: addr, URL: "http://" + addr, DataDir: o.DataDir, trap: trap}
		lastErr = waitHTTP(p, b.URL+"/readyz", http.StatusOK, 20*time.Second)
		if lastErr == nil && !strings.Contains(tailFile(logPath, 50), `"addr":"`+addr+`"`) {
			lastErr = fmt.Errorf("berth did not log serving on %s; something else answers there", addr)
		}
		if lastErr == nil {
			t.Cleanup(func() {
				if code := b.stop(15 * time.Second); code != 0 && !t.Failed() {
					t.Errorf("berth exited with code %d when stopped", code)
				}
				if t.Failed() {
					t.Logf("berth log (tail):\n%s", b.tail(40))
				}
			})
			return b
		}
		p.stop(5 * time.Second)
		if !strings.Contains(tailFile(logPath, 5), "cannot listen") {
			t.Fatalf("berth did not become ready: %v\n%s", lastErr, p.tail(30))
		}
		t.Logf("berth could not listen on %s, retrying", addr)
	}
	t.Fatalf("berth did not start: %v", lastErr)
	return nil
}

// sync makes berth answer a request of the test's own (refused, no upstream
// involved) and waits for its debug "request" line: berth logs a request
// once it is answered, so every request answered before is logged by then.
func (b *berth) sync(t *testing.T) {
	t.Helper()
	path := "/v2/berth-e2e-sync/blobs/uploads/" + strconv.FormatInt(time.Now().UnixNano(), 36)
	resp, err := http.Get(b.URL + path)
	if err != nil {
		t.Fatalf("berth sentinel request: %v", err)
	}
	_ = resp.Body.Close()
	needle := `"path":` + strconv.Quote(path)
	if !eventually(logWait, func() bool { return strings.Contains(readFile(b.log), needle) }) {
		t.Fatalf("berth did not log the sentinel request %s within %s", path, logWait)
	}
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// logLines returns berth's JSON log lines whose msg is msg.
func (b *berth) logLines(t *testing.T, msg string) []string {
	t.Helper()
	f, err := os.Open(b.log)
	if err != nil {
		t.Fatalf("reading berth's log: %v", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	needle := `"msg":` + strconv.Quote(msg)
	for sc.Scan() {
		if strings.Contains(sc.Text(), needle) {
			out = append(out, sc.Text())
		}
	}
	return out
}

// connTrap is a listener standing in for an HTTP proxy: it records every
// connection made to it and closes it.
type connTrap struct {
	ln net.Listener
	mu sync.Mutex
	// seen holds the first line of each connection (CONNECT host:443 …).
	seen []string
}

func newConnTrap(t *testing.T) *connTrap {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &connTrap{ln: ln}
	go c.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		if seen := c.Seen(); len(seen) > 0 {
			t.Errorf("berth tried to reach %d non-loopback destination(s) through the proxy trap: %q", len(seen), seen)
		}
	})
	return c
}

func (c *connTrap) Addr() string { return c.ln.Addr().String() }

func (c *connTrap) serve() {
	for {
		conn, err := c.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
			line, err := bufio.NewReader(conn).ReadString('\n')
			if err != nil && line == "" {
				line = "(no request line: " + err.Error() + ")"
			}
			c.mu.Lock()
			c.seen = append(c.seen, strings.TrimSpace(line))
			c.mu.Unlock()
			_, _ = conn.Write([]byte("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
		}()
	}
}

// Seen returns the first lines of the connections trapped so far.
func (c *connTrap) Seen() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.seen...)
}

// runTool runs a client tool with a timeout and returns its combined output.
func runTool(t *testing.T, timeout time.Duration, dir string, env []string, bin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = errors.Join(err, fmt.Errorf("%s timed out after %s", filepath.Base(bin), timeout))
	}
	return string(out), err
}
