package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Load returns Default() overlaid with the YAML file at path (if path is not
// empty) and then with BERTH_* variables from getenv. Flags are applied by the
// caller afterwards; call Validate last.
func Load(path string, getenv func(string) (string, bool)) (Config, error) {
	c := Default()
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("config: reading %s: %w", path, err)
		}
		if err := decodeYAML(b, &c); err != nil {
			var ce *Error
			if errors.As(err, &ce) {
				ce.Where = strings.TrimSuffix(path+" "+ce.Where, " ")
				return c, err
			}
			return c, fmt.Errorf("config: %s: %w", path, err)
		}
	}
	if getenv == nil {
		getenv = os.LookupEnv
	}
	if err := applyEnv(&c, getenv); err != nil {
		return c, err
	}
	if err := applyUpstreamSecrets(&c, getenv); err != nil {
		return c, err
	}
	return c, nil
}

// decodeYAML applies a YAML document key by key, so that every error names
// its key (a bad value, or a key berth does not know).
func decodeYAML(b []byte, c *Config) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return err
	}
	if len(doc.Content) == 0 {
		return nil // empty file
	}
	return applyNode(c, doc.Content[0], "")
}

func applyNode(c *Config, n *yaml.Node, prefix string) error {
	if n.Kind != yaml.MappingNode {
		return &Error{Key: strings.TrimSuffix(prefix, "."), Value: n.Value, Expected: "a mapping of keys"}
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key := prefix + n.Content[i].Value
		v := n.Content[i+1]
		switch {
		case key == "upstreams":
			if err := applyUpstreams(c, v); err != nil {
				return err
			}
		case v.Kind == yaml.MappingNode:
			if err := applyNode(c, v, key+"."); err != nil {
				return err
			}
		case v.Kind == yaml.ScalarNode:
			if err := c.Set(key, v.Value); err != nil {
				var ce *Error
				if errors.As(err, &ce) {
					ce.Where = fmt.Sprintf("line %d", v.Line)
				}
				return err
			}
		default:
			return &Error{Key: key, Value: v.Value, Expected: "a single value"}
		}
	}
	return nil
}

// EnvName returns the environment variable for a dotted key, e.g.
// "admin.max_message_bytes" -> BERTH_ADMIN_MAX_MESSAGE_BYTES.
func EnvName(key string) string {
	return "BERTH_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

func applyEnv(c *Config, getenv func(string) (string, bool)) error {
	for _, k := range Keys() {
		v, ok := getenv(k.Env)
		if !ok {
			continue
		}
		if k.Name == keyUpstreams {
			if err := c.setUpstreams(v); err != nil {
				return err
			}
			continue
		}
		if err := setScalar(k.field(c), v); err != nil {
			return &Error{Key: k.Name + " (" + k.Env + ")", Value: v, Expected: err.Error(), Hidden: k.Secret}
		}
	}
	return nil
}

// setUpstreams applies BERTH_UPSTREAMS: NAME=URL,NAME=URL.
func (c *Config) setUpstreams(v string) error {
	if v == "" {
		return nil
	}
	for _, kv := range strings.Split(v, ",") {
		if err := c.SetUpstream(kv); err != nil {
			return err
		}
	}
	return nil
}

// Set assigns a scalar key from its string form, as flags and env do.
func (c *Config) Set(key, value string) error {
	k, ok := LookupKey(key)
	if !ok || k.Name == keyUpstreams {
		return unknownKey(key, "a known key")
	}
	if err := setScalar(k.field(c), value); err != nil {
		return &Error{Key: key, Value: value, Expected: err.Error(), Hidden: k.Secret}
	}
	return nil
}

// SetUpstream adds or replaces an upstream from NAME=URL.
func (c *Config) SetUpstream(kv string) error {
	name, u, ok := strings.Cut(strings.TrimSpace(kv), "=")
	if !ok || !ValidRegistryName(name) {
		return &Error{Key: "upstream", Value: kv, Expected: "NAME=URL, e.g. docker.io=https://registry-1.docker.io"}
	}
	if err := validateURL(u); err != nil {
		return &Error{Key: "upstreams." + name + ".url", Value: u, Expected: "an http:// or https:// URL with a host and no path"}
	}
	up := c.Upstreams[name]
	up.URL = u
	if c.Upstreams == nil {
		c.Upstreams = map[string]Upstream{}
	}
	c.Upstreams[name] = up
	return nil
}

var (
	sizeType     = reflect.TypeOf(Size(0))
	durationType = reflect.TypeOf(Duration(0))
)

func setScalar(f reflect.Value, s string) error {
	switch {
	case f.Type() == sizeType:
		v, err := ParseSize(s)
		if err != nil {
			return errors.New("a size such as 512Mi, 20Gi or 10GB")
		}
		f.SetInt(int64(v))
	case f.Type() == durationType:
		v, err := time.ParseDuration(s)
		if err != nil {
			return errors.New("a duration in Go syntax such as 90s or 5m")
		}
		f.SetInt(int64(v))
	case f.Kind() == reflect.String:
		f.SetString(s)
	case f.Kind() == reflect.Int:
		v, err := strconv.Atoi(s)
		if err != nil {
			return errors.New("an integer")
		}
		f.SetInt(int64(v))
	case f.Kind() == reflect.Bool:
		v, err := strconv.ParseBool(s)
		if err != nil {
			return errors.New("true or false")
		}
		f.SetBool(v)
	default:
		return fmt.Errorf("unsupported kind %s", f.Kind())
	}
	return nil
}

// applyUpstreams reads upstreams: {NAME: {url, username, password}}, naming
// any unknown key.
func applyUpstreams(c *Config, n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return &Error{Key: "upstreams", Value: n.Value, Expected: "a map of NAME: {url, username, password}"}
	}
	if c.Upstreams == nil {
		c.Upstreams = map[string]Upstream{}
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		name, v := n.Content[i].Value, n.Content[i+1]
		key := "upstreams." + name
		if v.Kind != yaml.MappingNode {
			return &Error{Key: key, Value: v.Value, Expected: "a mapping with url, username, password", Where: fmt.Sprintf("line %d", v.Line)}
		}
		var u Upstream
		for j := 0; j+1 < len(v.Content); j += 2 {
			k, val := v.Content[j].Value, v.Content[j+1].Value
			switch k {
			case "url":
				u.URL = val
			case "username":
				u.Username = val
			case "password":
				u.Password = val
			case "password_file":
				u.PasswordFile = val
			case "prefix":
				u.Prefix = val
			default:
				e := unknownKey(key+"."+k, "one of url, username, password, password_file, prefix")
				e.Where = fmt.Sprintf("line %d", v.Content[j].Line)
				return e
			}
		}
		c.Upstreams[name] = u
	}
	return nil
}
