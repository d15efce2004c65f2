package config

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"time"
	"unicode"
)

// Private content (docs/private-images.md): who may read what a private
// repository holds, how long the upstream's acceptance of a client's
// credentials is trusted, and where a node credential's secret comes from.

// Values of private_content.
const (
	PrivateContentClient = "client"
	PrivateContentNode   = "node"
)

// Defaults of the private-content keys.
const (
	DefaultAuthTTL   = 5 * time.Minute
	DefaultAuthGrace = 15 * time.Minute
)

func (c *Config) validatePrivate() error {
	if c.AuthTTL <= 0 {
		return &Error{Key: "auth_ttl", Value: c.AuthTTL.String(), Expected: "a duration > 0 such as 5m"}
	}
	if c.AuthGrace < 0 {
		return &Error{Key: "auth_grace", Value: c.AuthGrace.String(), Expected: "a duration >= 0 such as 15m (0: none)"}
	}
	switch c.PrivateContent {
	case PrivateContentClient, PrivateContentNode:
	default:
		return &Error{Key: "private_content", Value: c.PrivateContent, Expected: "client (every client proves access with its own credentials) or node (any client reads what the node credential fetched)"}
	}
	return nil
}

// UpstreamEnvPrefix is the start of the environment variables that carry an
// upstream's credentials and prefix: BERTH_UPSTREAMS_<NAME>_USERNAME, _PASSWORD,
// _PASSWORD_FILE and _PREFIX, NAME being the registry name in upper case with every
// character other than a letter or digit replaced by "_"
// (registry.example.com:5000 -> REGISTRY_EXAMPLE_COM_5000).
func UpstreamEnvPrefix(name string) string {
	m := strings.Map(func(r rune) rune {
		if r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r)) {
			return unicode.ToUpper(r)
		}
		return '_'
	}, name)
	return "BERTH_UPSTREAMS_" + m + "_"
}

// applyUpstreamSecrets takes upstream credentials (and prefixes) from the environment and
// reads password files, so a Kubernetes Secret (env or mounted file) can
// supply them instead of the YAML. It runs after the file and BERTH_UPSTREAMS,
// so it applies to every upstream named by either.
func applyUpstreamSecrets(c *Config, getenv func(string) (string, bool)) error {
	names := make([]string, 0, len(c.Upstreams))
	for n := range c.Upstreams {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		u := c.Upstreams[n]
		p := UpstreamEnvPrefix(n)
		if v, ok := getenv(p + "USERNAME"); ok {
			u.Username = v
		}
		if v, ok := getenv(p + "PASSWORD"); ok {
			u.Password = v
		}
		if v, ok := getenv(p + "PASSWORD_FILE"); ok {
			u.PasswordFile = v
		}
		if v, ok := getenv(p + "PREFIX"); ok {
			u.Prefix = v
		}
		if u.PasswordFile != "" {
			pw, err := readPasswordFile(n, u)
			if err != nil {
				return err
			}
			u.Password = pw
		}
		c.Upstreams[n] = u
	}
	return nil
}

// readPasswordFile reads a password file, dropping one trailing newline
// (what `echo` and most editors leave). Its content is never put in an
// error.
func readPasswordFile(name string, u Upstream) (string, error) {
	key := "upstreams." + name + ".password_file"
	if u.Password != "" {
		return "", &Error{Key: key, Value: u.PasswordFile, Expected: "either password or password_file, not both"}
	}
	b, err := os.ReadFile(u.PasswordFile)
	if err != nil {
		return "", &Error{Key: key, Value: u.PasswordFile, Expected: fmt.Sprintf("a readable file holding the password (%s)", errReason(err))}
	}
	pw := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if pw == "" {
		return "", &Error{Key: key, Value: u.PasswordFile, Expected: "a file holding a non-empty password"}
	}
	return pw, nil
}

func errReason(err error) string {
	switch {
	case os.IsNotExist(err):
		return "no such file"
	case os.IsPermission(err):
		return "permission denied"
	}
	return "unreadable"
}
