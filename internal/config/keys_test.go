package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// Every key, the new ones included, is in the one list with its metadata.
func TestKeysMetadata(t *testing.T) {
	want := map[string]struct{ live, secret bool }{
		"upstreams":               {live: true},
		"tag_ttl":                 {live: true},
		"max_disk":                {live: true},
		"default_upstream":        {live: true},
		"upstream_timeout":        {live: true},
		"upstream_retries":        {live: true},
		"log.level":               {live: true},
		"max_fetches":             {},
		"max_manifest_bytes":      {live: true},
		"metrics_listen":          {},
		"admin.max_message_bytes": {},
		"cluster.peer_bind":       {},
		"cluster.peer_join":       {},
		"cluster.advertise_url":   {},
		"cluster.peer_listen":     {},
		"cluster.name":            {},
		"cluster.node_name":       {},
		"cluster.secret":          {secret: true},
		"cluster.extra_secrets":   {secret: true},
	}
	got := map[string]Key{}
	for _, k := range Keys() {
		if _, dup := got[k.Name]; dup {
			t.Errorf("key %s listed twice", k.Name)
		}
		got[k.Name] = k
	}
	for name, w := range want {
		k, ok := got[name]
		if !ok {
			t.Errorf("key %s missing", name)
			continue
		}
		if k.Live != w.live || k.Secret != w.secret {
			t.Errorf("%s: live %v secret %v, want %v %v", name, k.Live, k.Secret, w.live, w.secret)
		}
	}
	if !isSecret("upstreams.private.test.password") || isSecret("upstreams.private.test.username") || isSecret("listen") {
		t.Error("isSecret is wrong for upstream fields or plain keys")
	}
}

// Set, env and the file reach every scalar key through the list.
func TestEveryKeySettable(t *testing.T) {
	for _, k := range Keys() {
		if k.Name == "upstreams" {
			continue
		}
		c := Default()
		before := k.field(&c).Interface()
		v := map[reflect.Kind]string{reflect.String: "x", reflect.Int: "7", reflect.Int64: "7", reflect.Bool: "true"}[k.field(&c).Kind()]
		switch k.field(&c).Type() {
		case sizeType:
			v = "3Mi"
		case durationType:
			v = "7s"
		}
		if err := c.Set(k.Name, v); err != nil {
			t.Errorf("Set(%s): %v", k.Name, err)
			continue
		}
		if reflect.DeepEqual(k.field(&c).Interface(), before) {
			t.Errorf("Set(%s, %s) changed nothing", k.Name, v)
		}
		e, err := Load("", env(map[string]string{k.Env: v}))
		if err != nil || !reflect.DeepEqual(k.field(&e).Interface(), k.field(&c).Interface()) {
			t.Errorf("env %s=%s: %v, %v", k.Env, v, k.field(&e).Interface(), err)
		}
	}
}

func TestDiffAndMerge(t *testing.T) {
	a, b := Default(), Default()
	if d := Diff(a, b); len(d) != 0 {
		t.Errorf("identical: %v", d)
	}
	b.TagTTL = Duration(time.Second)
	b.Admin.MaxMessageBytes = 1 << 20
	b.Log.Level = "debug"
	b.Cluster.Secret = "s"
	b.MaxManifestBytes = 8 << 20
	b.Upstreams = Default().Upstreams
	b.Upstreams["x.test"] = Upstream{URL: "https://x.test"}
	want := []string{"admin.max_message_bytes", "cluster.secret", "log.level", "max_manifest_bytes", "tag_ttl", "upstreams"}
	if d := Diff(a, b); !slices.Equal(d, want) {
		t.Errorf("Diff = %v, want %v", d, want)
	}
	m := Merge(a, b, []string{"tag_ttl", "upstreams"})
	if m.TagTTL != b.TagTTL || m.Upstreams["x.test"].URL == "" || m.Log.Level != a.Log.Level || m.Admin.MaxMessageBytes != a.Admin.MaxMessageBytes {
		t.Errorf("Merge took the wrong keys: %+v", m)
	}
	if a.TagTTL == b.TagTTL {
		t.Error("Merge changed its base")
	}
}

func TestMapRedactsSecrets(t *testing.T) {
	c := Default()
	c.Cluster.Secret = "gossip-key"
	c.Cluster.ExtraSecrets = "old-key"
	c.Upstreams["private.test"] = Upstream{URL: "https://private.test", Username: "u", Password: "hunter2"}
	m := c.Map()
	for _, s := range []string{"gossip-key", "old-key", "hunter2"} {
		if strings.Contains(fmt.Sprint(m), s) {
			t.Errorf("config map shows %q: %v", s, m)
		}
	}
	cl := m["cluster"].(map[string]any)
	ups := m["upstreams"].(map[string]any)
	priv := ups["private.test"].(map[string]any)
	if cl["secret"] != "REDACTED" || cl["extra_secrets"] != "REDACTED" || priv["password"] != "REDACTED" || priv["username"] != "u" {
		t.Errorf("map: cluster %v, upstream %v", cl, priv)
	}
	if m["tag_ttl"] != "1m0s" || m["max_disk"] != "20Gi" || m["max_fetches"] != 32 || m["metrics_listen"] != "" {
		t.Errorf("map values: %v", m)
	}
	if c.Cluster.Secret != "gossip-key" || c.Upstreams["private.test"].Password != "hunter2" {
		t.Error("Map changed the config it was given")
	}
}

// No configuration error echoes a credential: not the value of a secret key,
// not the value of an unknown key (a misspelt secret is still a secret), not
// the userinfo of a URL.
func TestErrorsNeverEchoSecrets(t *testing.T) {
	const secret = "s3cr3t-T0ken"
	dir := t.TempDir()
	tests := []struct {
		name string
		file string
		env  map[string]string
		flag func(c *Config) error
		key  string
	}{
		{name: "misspelt upstream password", file: "upstreams:\n  x.test:\n    url: https://x.test\n    pasword: " + secret + "\n", key: "upstreams.x.test.pasword"},
		{name: "misspelt cluster secret", file: "cluster:\n  secrt: " + secret + "\n", key: "cluster.secrt"},
		{name: "unknown top-level key", file: "token: " + secret + "\n", key: "token"},
		{name: "secret given a mapping", file: "cluster:\n  secret: [" + secret + "]\n", key: "cluster.secret"},
		{name: "upstream URL with userinfo in the file", file: "upstreams:\n  x.test:\n    url: https://user:" + secret + "@x.test\n", key: "upstreams.x.test.url"},
		{name: "upstream given as a URL with userinfo", file: "upstreams:\n  x.test: https://user:" + secret + "@x.test\n", key: "upstreams.x.test"},
		{name: "BERTH_UPSTREAMS with userinfo", env: map[string]string{"BERTH_UPSTREAMS": "x.test=https://user:" + secret + "@x.test"}, key: "upstreams.x.test.url"},
		{name: "--upstream with userinfo and no scheme", flag: func(c *Config) error { return c.SetUpstream("x.test=user:" + secret + "@x.test") }, key: "upstreams.x.test.url"},
		{name: "--upstream malformed with userinfo", flag: func(c *Config) error { return c.SetUpstream("user:" + secret + "@x.test") }, key: "upstream"},
		{name: "unknown key set by flag", flag: func(c *Config) error { return c.Set("cluster.secert", secret) }, key: "cluster.secert"},
		{name: "default_upstream with userinfo", flag: func(c *Config) error {
			c.DefaultUpstream = "user:" + secret + "@x.test"
			return c.Validate()
		}, key: "default_upstream"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := ""
			if tt.file != "" {
				path = filepath.Join(dir, "c.yaml")
				if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			c, err := Load(path, env(tt.env))
			if err == nil && tt.flag != nil {
				err = tt.flag(&c)
			}
			if err == nil {
				err = c.Validate()
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.Key != tt.key {
				t.Fatalf("err = %v, want a config error naming %s", err, tt.key)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("the error echoes the secret: %s", err)
			}
		})
	}
}

func TestStripUserinfo(t *testing.T) {
	for in, want := range map[string]string{
		"https://u:p@h.test":        "https://REDACTED@h.test",
		"https://h.test":            "https://h.test",
		"u:p@h.test":                "REDACTED@h.test",
		"x.test=https://u:p@h.test": "x.test=https://REDACTED@h.test",
		"x.test=u:p@h.test":         "x.test=REDACTED@h.test",
		"20Gi":                      "20Gi",
	} {
		if got := stripUserinfo(in); got != want {
			t.Errorf("stripUserinfo(%q) = %q, want %q", in, got, want)
		}
	}
}
