package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaultIsValid(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for name := range Builtins() {
		if _, ok := c.Upstreams[name]; !ok {
			t.Errorf("built-in %s missing", name)
		}
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want Size
		bad  bool
	}{
		{"512Mi", 512 << 20, false}, {"20Gi", 20 << 30, false}, {"10GB", 10e9, false},
		{"1048576", 1 << 20, false}, {"1.5Ki", 1536, false}, {"64KiB", 64 << 10, false},
		{"0", 0, false}, {"", 0, true}, {"lots", 0, true}, {"-1Mi", 0, true}, {"Mi", 0, true},
		{"99999999999Ti", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err != nil) != tt.bad || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, bad=%v", tt.in, got, err, tt.want, tt.bad)
		}
	}
}

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestLoadPrecedenceAndErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "c.yml")
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		file    string
		env     map[string]string
		check   func(t *testing.T, c Config)
		wantKey string // error naming this key
	}{
		{name: "empty file", file: "", check: func(t *testing.T, c Config) {
			if c.Listen != ":5000" {
				t.Errorf("listen %q", c.Listen)
			}
		}},
		{name: "file values", file: "listen: 127.0.0.1:6000\ntag_ttl: 90s\nmax_disk: 1Gi\nadmin:\n  max_message_bytes: 64Mi\nupstreams:\n  registry.test:5000: {url: http://127.0.0.1:5001, username: u, password: p}\n",
			check: func(t *testing.T, c Config) {
				if c.Listen != "127.0.0.1:6000" || c.TagTTL.D() != 90*time.Second || c.MaxDisk != 1<<30 || c.Admin.MaxMessageBytes != 64<<20 {
					t.Errorf("got %+v", c)
				}
				if c.Upstreams["registry.test:5000"].Password != "p" || c.Upstreams["docker.io"].URL == "" {
					t.Errorf("upstreams %+v", c.Upstreams)
				}
				if r := c.Redacted(); r.Upstreams["registry.test:5000"].Password != "REDACTED" {
					t.Error("password not redacted")
				}
			}},
		{name: "env wins over file", file: "tag_ttl: 90s\n", env: map[string]string{"BERTH_TAG_TTL": "5s", "BERTH_ADMIN_MAX_MESSAGE_BYTES": "1Mi", "BERTH_UPSTREAMS": "a.test=http://127.0.0.1:1"},
			check: func(t *testing.T, c Config) {
				if c.TagTTL.D() != 5*time.Second || c.Admin.MaxMessageBytes != 1<<20 || c.Upstreams["a.test"].URL != "http://127.0.0.1:1" {
					t.Errorf("got %+v", c)
				}
			}},
		{name: "bad duration", file: "tag_ttl: soon\n", wantKey: "tag_ttl"},
		{name: "unknown key", file: "bogus: 1\n", wantKey: "bogus"},
		{name: "unknown nested key", file: "admin:\n  sockit: /x\n", wantKey: "admin.sockit"},
		{name: "unknown upstream key", file: "upstreams:\n  a.test: {uri: http://x}\n", wantKey: "upstreams.a.test.uri"},
		{name: "bad env size", env: map[string]string{"BERTH_MAX_DISK": "lots"}, wantKey: "max_disk"},
		{name: "bad env int", env: map[string]string{"BERTH_MAX_FETCHES": "many"}, wantKey: "max_fetches"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := ""
			if tt.file != "" {
				path = write(tt.file)
			}
			c, err := Load(path, env(tt.env))
			if err == nil {
				err = c.Validate()
			}
			if tt.wantKey != "" {
				var ce *Error
				if !errors.As(err, &ce) || !strings.HasPrefix(ce.Key, tt.wantKey) {
					t.Fatalf("err = %v, want a config error naming %s", err, tt.wantKey)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error spans lines: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		key string
		mut func(c *Config)
	}{
		{"listen", func(c *Config) { c.Listen = "nope" }},
		{"default_upstream", func(c *Config) { c.DefaultUpstream = "unknown.test" }},
		{"upstreams.x.test.url", func(c *Config) { c.Upstreams["x.test"] = Upstream{URL: "https://h/path"} }},
		{"upstreams", func(c *Config) { c.Upstreams["Bad Name"] = Upstream{URL: "https://h"} }},
		{"max_fetches", func(c *Config) { c.MaxFetches = 0 }},
		{"log.level", func(c *Config) { c.Log.Level = "loud" }},
		{"admin.max_message_bytes", func(c *Config) { c.Admin.MaxMessageBytes = 10 }},
		{"fetch_timeout", func(c *Config) { c.FetchTimeout = 0 }},
		{"upstreams.x.test:5000.prefix", func(c *Config) { c.Upstreams["x.test:5000"] = Upstream{URL: "https://h", Prefix: "x.test"} }},
		{"upstreams.x.test:5000.prefix", func(c *Config) { c.Upstreams["x.test:5000"] = Upstream{URL: "https://h", Prefix: "Corp"} }},
		{"upstreams.x.test:5000.prefix", func(c *Config) { c.Upstreams["x.test:5000"] = Upstream{URL: "https://h", Prefix: "localhost"} }},
		{"upstreams.x.test:5000.prefix", func(c *Config) {
			c.Upstreams["x.test:5000"] = Upstream{URL: "https://h", Prefix: "corp"}
			c.Upstreams["corp"] = Upstream{URL: "https://h"}
		}},
		{"upstreams.y.test:5000.prefix", func(c *Config) {
			c.Upstreams["x.test:5000"] = Upstream{URL: "https://h", Prefix: "corp"}
			c.Upstreams["y.test:5000"] = Upstream{URL: "https://h", Prefix: "corp"}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			c := Default()
			tt.mut(&c)
			var ce *Error
			if err := c.Validate(); !errors.As(err, &ce) || ce.Key != tt.key {
				t.Fatalf("Validate() = %v, want key %s", err, tt.key)
			}
		})
	}
}

// TestUpstreamPrefix: a prefix from the file or the environment, valid ones
// accepted.
func TestUpstreamPrefix(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "berth.yaml")
	if err := os.WriteFile(file, []byte("upstreams:\n  registry.corp:5000: {url: http://127.0.0.1:5001, prefix: corp}\n  b.test:5000: {url: http://127.0.0.1:5002}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"BERTH_UPSTREAMS_B_TEST_5000_PREFIX": "b_test-5000"}
	c, err := Load(file, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if p := c.Upstreams["registry.corp:5000"].Prefix; p != "corp" {
		t.Errorf("prefix from the file = %q, want corp", p)
	}
	if p := c.Upstreams["b.test:5000"].Prefix; p != "b_test-5000" {
		t.Errorf("prefix from BERTH_UPSTREAMS_B_TEST_5000_PREFIX = %q", p)
	}
	for _, p := range []string{"corp", "a1", "team_x", "x--y"} {
		if !ValidPrefix(p) {
			t.Errorf("ValidPrefix(%q) = false", p)
		}
	}
	for _, p := range []string{"", "a.b", "a:1", "a/b", "-a", "A", "localhost", strings.Repeat("a", 65)} {
		if ValidPrefix(p) {
			t.Errorf("ValidPrefix(%q) = true", p)
		}
	}
}

func TestSetUpstream(t *testing.T) {
	c := Default()
	if err := c.SetUpstream("registry.test:5000=http://127.0.0.1:5001"); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"noequals", "=http://x", "a.test=ftp://x", "a.test=http://"} {
		if err := c.SetUpstream(bad); err == nil {
			t.Errorf("SetUpstream(%q) accepted", bad)
		}
	}
}

func TestKeysHaveEnvNames(t *testing.T) {
	keys := Keys()
	if len(keys) < 10 {
		t.Fatalf("keys: %v", keys)
	}
	for _, k := range keys {
		if k.Env != EnvName(k.Name) || !strings.HasPrefix(k.Env, "BERTH_") || strings.Contains(k.Env, ".") {
			t.Errorf("env name for %s: %s", k.Name, k.Env)
		}
	}
}
