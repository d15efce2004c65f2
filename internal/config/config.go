// Package config holds berth's configuration: the YAML file, BERTH_* environment
// variables and command-line flags, merged in that order of precedence (flags win),
// and validated with errors that name the offending key.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Config is the whole of berth's configuration. The zero value is not useful;
// start from Default().
type Config struct {
	// Listen is the registry's HTTP listen address.
	Listen string `yaml:"listen"`
	// DataDir holds blobs, temporary files and the metadata database.
	DataDir string `yaml:"data_dir"`
	// DefaultUpstream is the registry name used when a request names none.
	DefaultUpstream string `yaml:"default_upstream" berth:"live"`
	// Upstreams maps registry names (as clients say them) to endpoints. Built-in
	// public registries are always present unless overridden here.
	Upstreams map[string]Upstream `yaml:"upstreams" berth:"live"`
	// MaxDisk bounds the bytes kept in the store; least recently used content is
	// evicted past it. Zero means unbounded.
	MaxDisk Size `yaml:"max_disk" berth:"live"`
	// TagTTL is how long a tag's resolution is trusted before asking upstream again.
	TagTTL Duration `yaml:"tag_ttl" berth:"live"`
	// MaxFetches caps concurrent upstream blob downloads.
	MaxFetches int `yaml:"max_fetches"`
	// FetchTimeout bounds one cache fill, which runs detached from the client.
	FetchTimeout Duration `yaml:"fetch_timeout"`
	// UpstreamTimeout bounds connecting to an upstream and waiting for its headers.
	UpstreamTimeout Duration `yaml:"upstream_timeout" berth:"live"`
	// UpstreamRetries is how many times a failed upstream request is retried.
	UpstreamRetries int `yaml:"upstream_retries" berth:"live"`
	// ShutdownTimeout is how long responses in flight may take to finish on SIGTERM.
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
	// MaxHeaderBytes caps request headers; larger requests get 431.
	MaxHeaderBytes Size `yaml:"max_header_bytes"`
	// MaxConnections caps concurrent client connections (0: unbounded).
	MaxConnections int `yaml:"max_connections"`
	// PieceFetches is how many ranged requests one blob's fill runs at once
	// for a blob over 16 MiB (fetch.PlanFor); 0 fetches every blob whole in
	// one stream. In a cluster each piece has its own owner.
	PieceFetches int `yaml:"piece_fetches"`
	// MaxManifestBytes caps a manifest read from upstream or served from the
	// store; larger manifests are refused.
	MaxManifestBytes Size `yaml:"max_manifest_bytes" berth:"live"`
	// MetricsListen, if set, is a second listener serving /metrics only (in
	// Kubernetes the node IP), so Prometheus can scrape while the mirror
	// stays on loopback.
	MetricsListen string `yaml:"metrics_listen"`
	// Log configures logging.
	Log Log `yaml:"log"`
	// Admin configures the JSON-RPC control socket.
	Admin Admin `yaml:"admin"`
	// Cluster configures peer-to-peer fetching between nodes (off unless
	// cluster.peer_bind is set).
	Cluster Cluster `yaml:"cluster"`

	// Private content (private.go, docs/private-images.md).

	// AuthTTL is how long the upstream's acceptance of a client's
	// credentials for a private repository is trusted.
	AuthTTL Duration `yaml:"auth_ttl"`
	// AuthGrace is how much longer an acceptance stays valid while the
	// upstream cannot be reached.
	AuthGrace Duration `yaml:"auth_grace"`
	// PrivateContent says who reads private content fetched with a node
	// credential: client (each client proves access itself) or node.
	PrivateContent string `yaml:"private_content"`
}

// Cluster configures membership and the peer API.
type Cluster struct {
	// PeerBind is the gossip (memberlist) HOST:PORT; empty turns the cluster off.
	PeerBind string `yaml:"peer_bind"`
	// PeerJoin is a comma-separated list of HOST:PORT (or a DNS name resolving
	// to several addresses) to join, re-resolved periodically.
	PeerJoin string `yaml:"peer_join"`
	// AdvertiseURL is where peers reach this node's peer API.
	AdvertiseURL string `yaml:"advertise_url"`
	// PeerListen, if set, is a listener serving the peer API only.
	PeerListen string `yaml:"peer_listen"`
	// Name is the cluster name (memberlist label): clusters with different
	// names never merge.
	Name string `yaml:"name"`
	// Secret keys gossip encryption and peer request tokens.
	Secret string `yaml:"secret" berth:"secret"`
	// ExtraSecrets (comma-separated) are also accepted, for rotation.
	ExtraSecrets string `yaml:"extra_secrets" berth:"secret"`
	// NodeName is this node's unique, stable member name (default: the
	// hostname and the gossip address, as cluster.DefaultNodeName).
	NodeName string `yaml:"node_name"`
	// UploadRate caps the bytes per second this node sends its peers (0:
	// no cap), to keep the node's NIC for its workloads.
	UploadRate Size `yaml:"upload_rate" berth:"live"`
}

// Upstream is one registry endpoint.
type Upstream struct {
	// URL is the endpoint, e.g. https://registry-1.docker.io or http://127.0.0.1:5001.
	URL string `yaml:"url"`
	// Username and Password are optional basic credentials, exchanged for tokens
	// when the registry asks. Never logged.
	Username string `yaml:"username"`
	Password string `yaml:"password" berth:"secret"`
	// PasswordFile, if set, holds the password (e.g. a mounted Kubernetes
	// Secret); read at start-up and on config.reload.
	PasswordFile string `yaml:"password_file"`
	// Prefix, if set, is a second name for this upstream as the first path
	// segment of a repository (berth:5000/corp/team/app), for clients whose
	// image references cannot name a registry with a port. One component of
	// lower-case letters, digits, '_' and '-' (no '.' or ':', so it never reads
	// as a registry host); empty: none.
	Prefix string `yaml:"prefix"`
}

// Log configures the logger.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level" berth:"live"`
	// Format is json, text or auto (json when stderr is not a terminal).
	Format string `yaml:"format"`
}

// Admin configures the control socket.
type Admin struct {
	// Socket is the Unix socket path; empty disables the control plane.
	Socket string `yaml:"socket"`
	// MaxMessageBytes caps one JSON-RPC message.
	MaxMessageBytes Size `yaml:"max_message_bytes"`
}

// BuiltinUpstreams are the public registries berth knows without configuration.
var builtinUpstreams = map[string]string{
	"docker.io":         "https://registry-1.docker.io",
	"ghcr.io":           "https://ghcr.io",
	"quay.io":           "https://quay.io",
	"registry.k8s.io":   "https://registry.k8s.io",
	"gcr.io":            "https://gcr.io",
	"mcr.microsoft.com": "https://mcr.microsoft.com",
	"public.ecr.aws":    "https://public.ecr.aws",
}

// Builtins returns a copy of the built-in registry endpoints.
func Builtins() map[string]string {
	m := make(map[string]string, len(builtinUpstreams))
	for k, v := range builtinUpstreams {
		m[k] = v
	}
	return m
}

// Default returns the embedded defaults: what `berth serve` runs with when given nothing.
func Default() Config {
	ups := make(map[string]Upstream, len(builtinUpstreams))
	for name, u := range builtinUpstreams {
		ups[name] = Upstream{URL: u}
	}
	return Config{
		Listen:           ":5000",
		DataDir:          "/var/lib/berth",
		DefaultUpstream:  "docker.io",
		Upstreams:        ups,
		MaxDisk:          20 << 30,
		TagTTL:           Duration(60 * time.Second),
		MaxFetches:       32,
		FetchTimeout:     Duration(30 * time.Minute),
		UpstreamTimeout:  Duration(30 * time.Second),
		UpstreamRetries:  3,
		ShutdownTimeout:  Duration(30 * time.Second),
		MaxHeaderBytes:   64 << 10,
		MaxConnections:   256,
		MaxManifestBytes: 4 << 20,
		PieceFetches:     4,
		Cluster:          Cluster{Name: "berth"},
		Log:              Log{Level: "info", Format: "auto"},
		Admin:            Admin{Socket: "/run/berth/admin.sock", MaxMessageBytes: 16 << 20},
		AuthTTL:          Duration(DefaultAuthTTL),
		AuthGrace:        Duration(DefaultAuthGrace),
		PrivateContent:   PrivateContentClient,
	}
}

// Error is a configuration error naming the key, the value and what is expected.
type Error struct {
	Key string
	// Value is the value given. Error() never shows the value of a secret
	// key or of a Hidden one, and replaces a URL's userinfo.
	Value string
	// Hidden withholds Value: set for unknown keys.
	Hidden   bool
	Expected string
	// Where, if set, is the file and line.
	Where string
}

// unknownKey is the error for a key berth does not know. Its value is not
// shown: a misspelt "pasword" holds a password all the same.
func unknownKey(key, expected string) *Error {
	return &Error{Key: key, Hidden: true, Expected: expected}
}

func (e *Error) Error() string {
	var msg string
	if e.Hidden || isSecret(e.Key) {
		msg = fmt.Sprintf("config: %s: invalid (value not shown): expected %s", e.Key, e.Expected)
	} else {
		msg = fmt.Sprintf("config: %s: invalid value %q: expected %s", e.Key, stripUserinfo(e.Value), e.Expected)
	}
	if e.Where != "" {
		msg += " (" + e.Where + ")"
	}
	return msg
}

// stripUserinfo replaces what may be credentials in a URL-like value
// (https://user:token@host, user:token@host, NAME=https://user:token@host)
// with REDACTED: everything from the start of the authority to the last '@'.
func stripUserinfo(s string) string {
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return s
	}
	start := 0
	if i := strings.Index(s, "://"); i >= 0 && i < at {
		start = i + len("://")
	} else if i := strings.IndexByte(s, '='); i >= 0 && i < at {
		start = i + 1
	}
	return s[:start] + redacted + s[at:]
}

// Validate checks every key and returns the first problem as an *Error.
func (c *Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return &Error{Key: "listen", Value: c.Listen, Expected: "HOST:PORT, e.g. :5000"}
	}
	if c.DataDir == "" {
		return &Error{Key: "data_dir", Value: c.DataDir, Expected: "a directory path"}
	}
	names := make([]string, 0, len(c.Upstreams))
	for n := range c.Upstreams {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if !ValidRegistryName(n) {
			return &Error{Key: "upstreams", Value: n, Expected: "a registry name such as registry.example.com or host:5000"}
		}
		u := c.Upstreams[n]
		if err := validateURL(u.URL); err != nil {
			return &Error{Key: "upstreams." + n + ".url", Value: u.URL, Expected: "an http:// or https:// URL with a host and no path, query or credentials"}
		}
	}
	if err := c.validatePrefixes(names); err != nil {
		return err
	}
	if _, ok := c.Upstreams[c.DefaultUpstream]; !ok {
		return &Error{Key: "default_upstream", Value: c.DefaultUpstream, Expected: "the name of a configured or built-in upstream"}
	}
	if c.MaxDisk < 0 {
		return &Error{Key: "max_disk", Value: c.MaxDisk.String(), Expected: "a size >= 0 such as 20Gi (0: unbounded)"}
	}
	if c.TagTTL < 0 {
		return &Error{Key: "tag_ttl", Value: c.TagTTL.String(), Expected: "a duration >= 0 such as 60s"}
	}
	if c.MaxFetches < 1 {
		return &Error{Key: "max_fetches", Value: fmt.Sprint(c.MaxFetches), Expected: "an integer >= 1"}
	}
	if c.PieceFetches < 0 || c.PieceFetches > 16 {
		return &Error{Key: "piece_fetches", Value: fmt.Sprint(c.PieceFetches), Expected: "an integer from 0 (pieces off) to 16"}
	}
	if c.UpstreamRetries < 0 || c.UpstreamRetries > 10 {
		return &Error{Key: "upstream_retries", Value: fmt.Sprint(c.UpstreamRetries), Expected: "an integer from 0 to 10"}
	}
	if c.MaxConnections < 0 {
		return &Error{Key: "max_connections", Value: fmt.Sprint(c.MaxConnections), Expected: "an integer >= 0 (0: unbounded)"}
	}
	for _, d := range []struct {
		key string
		v   Duration
	}{{"fetch_timeout", c.FetchTimeout}, {"upstream_timeout", c.UpstreamTimeout}, {"shutdown_timeout", c.ShutdownTimeout}} {
		if d.v <= 0 {
			return &Error{Key: d.key, Value: d.v.String(), Expected: "a duration > 0 such as 30s"}
		}
	}
	if c.MaxHeaderBytes < 4<<10 || c.MaxHeaderBytes > 1<<20 {
		return &Error{Key: "max_header_bytes", Value: c.MaxHeaderBytes.String(), Expected: "a size from 4Ki to 1Mi"}
	}
	if c.MaxManifestBytes < 4<<10 || c.MaxManifestBytes > 64<<20 {
		return &Error{Key: "max_manifest_bytes", Value: c.MaxManifestBytes.String(), Expected: "a size from 4Ki to 64Mi"}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return &Error{Key: "log.level", Value: c.Log.Level, Expected: "one of debug, info, warn, error"}
	}
	switch c.Log.Format {
	case "auto", "json", "text":
	default:
		return &Error{Key: "log.format", Value: c.Log.Format, Expected: "one of auto, json, text"}
	}
	if c.Admin.MaxMessageBytes < 1<<10 || c.Admin.MaxMessageBytes > 1<<30 {
		return &Error{Key: "admin.max_message_bytes", Value: c.Admin.MaxMessageBytes.String(), Expected: "a size from 1Ki to 1Gi"}
	}
	if err := c.validateCluster(); err != nil { // internal/config/cluster.go
		return err
	}
	return c.validatePrivate() // internal/config/private.go
}

func validateURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("scheme")
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || (u.Path != "" && u.Path != "/") {
		return errors.New("shape")
	}
	return nil
}

var prefixRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:_|__|-+)[a-z0-9]+)*$`)

// ValidPrefix reports whether s can be an upstream's prefix: one repository
// path component without '.', so that it never reads as a registry host.
func ValidPrefix(s string) bool {
	return len(s) <= 64 && s != "localhost" && prefixRE.MatchString(s)
}

// validatePrefixes checks each upstream's prefix and that no two share one.
func (c *Config) validatePrefixes(sorted []string) error {
	owner := map[string]string{}
	for _, n := range sorted {
		p := c.Upstreams[n].Prefix
		if p == "" {
			continue
		}
		key := "upstreams." + n + ".prefix"
		if !ValidPrefix(p) {
			return &Error{Key: key, Value: p, Expected: "one path component of a-z, 0-9, '_' and '-' (no '.' or ':'), such as corp"}
		}
		if o, dup := owner[p]; dup {
			return &Error{Key: key, Value: p, Expected: "a prefix no other upstream has (upstreams." + o + ".prefix has it)"}
		}
		if _, dup := c.Upstreams[p]; dup {
			return &Error{Key: key, Value: p, Expected: "a prefix that is not the name of an upstream"}
		}
		owner[p] = n
	}
	return nil
}

// PrefixOwner returns the name of the upstream whose prefix is p.
func (c *Config) PrefixOwner(p string) (string, bool) {
	if p == "" {
		return "", false
	}
	for n, u := range c.Upstreams {
		if u.Prefix == p {
			return n, true
		}
	}
	return "", false
}

// ValidRegistryName reports whether s looks like a registry host[:port].
func ValidRegistryName(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	u, err := url.Parse("//" + s)
	if err != nil || u.Host != s || u.Hostname() == "" {
		return false
	}
	return !strings.ContainsAny(s, "/@?#") && strings.ToLower(s) == s
}

// Redacted returns a copy with secrets replaced, safe to log or return over RPC.
func (c Config) Redacted() Config {
	c = redactKeys(c) // every key tagged berth:"secret"
	ups := make(map[string]Upstream, len(c.Upstreams))
	for n, u := range c.Upstreams {
		u = u.redacted()
		ups[n] = u
	}
	c.Upstreams = ups
	c.Cluster = c.Cluster.redacted()
	return c
}
