package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPrivateDefaults(t *testing.T) {
	c := Default()
	if c.AuthTTL.D() != 5*time.Minute || c.AuthGrace.D() != 15*time.Minute || c.PrivateContent != "client" {
		t.Fatalf("defaults: auth_ttl %s, auth_grace %s, private_content %q", c.AuthTTL, c.AuthGrace, c.PrivateContent)
	}
}

func TestPrivateValidate(t *testing.T) {
	cases := []struct {
		name, key, value, wantKey string
	}{
		{"ttl zero", "auth_ttl", "0s", "auth_ttl"},
		{"grace negative", "auth_grace", "-1s", "auth_grace"},
		{"mode", "private_content", "everyone", "private_content"},
		{"grace zero ok", "auth_grace", "0s", ""},
		{"node ok", "private_content", "node", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			if err := c.Set(tc.key, tc.value); err != nil {
				t.Fatal(err)
			}
			err := c.Validate()
			var ce *Error
			if tc.wantKey == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.As(err, &ce) || ce.Key != tc.wantKey {
				t.Fatalf("error %v, want one naming %s", err, tc.wantKey)
			}
		})
	}
}

func TestPrivateUpstreamSecrets(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "berth.yaml")
	yaml := "upstreams:\n  registry.example.com:5000:\n    url: https://registry.example.com:5000\n    username: bot\n    password_file: " + pwFile + "\n"
	if err := os.WriteFile(cfgFile, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(m map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	c, err := Load(cfgFile, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if u := c.Upstreams["registry.example.com:5000"]; u.Username != "bot" || u.Password != "from-file" {
		t.Fatalf("password_file: got user %q password set %v", u.Username, u.Password == "from-file")
	}
	if strings.Contains(redactedText(c), "from-file") {
		t.Fatal("the password from a file shows in the redacted config")
	}
	// Env for a built-in upstream and for one named by BERTH_UPSTREAMS.
	c, err = Load("", env(map[string]string{
		"BERTH_UPSTREAMS":                                 "ghcr.example:5000=http://127.0.0.1:9",
		"BERTH_UPSTREAMS_DOCKER_IO_USERNAME":              "hubuser",
		"BERTH_UPSTREAMS_DOCKER_IO_PASSWORD":              "hub-pass",
		"BERTH_UPSTREAMS_GHCR_EXAMPLE_5000_USERNAME":      "g",
		"BERTH_UPSTREAMS_GHCR_EXAMPLE_5000_PASSWORD_FILE": pwFile,
	}))
	if err != nil {
		t.Fatal(err)
	}
	if u := c.Upstreams["docker.io"]; u.Username != "hubuser" || u.Password != "hub-pass" {
		t.Fatalf("docker.io from env: %q", u.Username)
	}
	if u := c.Upstreams["ghcr.example:5000"]; u.Username != "g" || u.Password != "from-file" {
		t.Fatalf("ghcr.example:5000 from env: %q", u.Username)
	}
	// Errors name the key and never show a password.
	for name, m := range map[string]map[string]string{
		"missing file": {"BERTH_UPSTREAMS_DOCKER_IO_PASSWORD_FILE": filepath.Join(dir, "nope")},
		"both":         {"BERTH_UPSTREAMS_DOCKER_IO_PASSWORD": "hub-pass", "BERTH_UPSTREAMS_DOCKER_IO_PASSWORD_FILE": pwFile},
	} {
		_, err := Load("", env(m))
		var ce *Error
		if !errors.As(err, &ce) || ce.Key != "upstreams.docker.io.password_file" || strings.Contains(err.Error(), "hub-pass") || strings.Contains(err.Error(), "from-file") {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if got := UpstreamEnvPrefix("registry.example.com:5000"); got != "BERTH_UPSTREAMS_REGISTRY_EXAMPLE_COM_5000_" {
		t.Fatal(got)
	}
}

// redactedText renders the redacted config as text for a search.
func redactedText(c Config) string {
	var b strings.Builder
	for n, u := range c.Redacted().Upstreams {
		b.WriteString(n + " " + u.Username + " " + u.Password + " " + u.PasswordFile + "\n")
	}
	return b.String()
}
