package config

import (
	"reflect"
	"sort"
	"strings"
)

// The Config struct is the one list of configuration keys. Each field's yaml
// tag names its key (nested structs join names with dots) and an optional
// berth tag says how the key behaves:
//
//	berth:"live"    config.reload applies a new value without a restart
//	berth:"secret"  the value is never logged, echoed in an error or returned
//	                by config.get
//
// Loading (file and BERTH_* env), config.reload and config.get all read the
// keys through Keys, so a key added to Config is loaded, diffed, reloaded (or
// reported as needing a restart) and shown (or redacted) without another list
// to update.

// Key describes one configuration key.
type Key struct {
	// Name is the dotted name as in the YAML file, e.g. admin.max_message_bytes.
	// The upstreams map is one key, "upstreams".
	Name string
	// Env is the environment variable that sets it (BERTH_UPSTREAMS takes
	// NAME=URL,… for the map).
	Env string
	// Live keys are applied by config.reload without a restart.
	Live bool
	// Secret keys are never logged, echoed or returned.
	Secret bool

	index []int // the field's index path in Config
}

// keyUpstreams is the one map-valued key.
const keyUpstreams = "upstreams"

// Keys lists every key in the order of the Config struct.
func Keys() []Key {
	var keys []Key
	var visit func(t reflect.Type, prefix string, index []int)
	visit = func(t reflect.Type, prefix string, index []int) {
		for i := 0; i < t.NumField(); i++ {
			sf := t.Field(i)
			tag := yamlName(sf)
			if tag == "" {
				continue
			}
			idx := append(append([]int(nil), index...), i)
			if sf.Type.Kind() == reflect.Struct && sf.Type != sizeType && sf.Type != durationType {
				visit(sf.Type, prefix+tag+".", idx)
				continue
			}
			name := prefix + tag
			flags := sf.Tag.Get("berth")
			keys = append(keys, Key{Name: name, Env: EnvName(name), Live: hasFlag(flags, "live"),
				Secret: hasFlag(flags, "secret"), index: idx})
		}
	}
	visit(reflect.TypeOf(Config{}), "", nil)
	return keys
}

// LookupKey returns the key named name.
func LookupKey(name string) (Key, bool) {
	for _, k := range Keys() {
		if k.Name == name {
			return k, true
		}
	}
	return Key{}, false
}

func yamlName(sf reflect.StructField) string {
	tag := strings.Split(sf.Tag.Get("yaml"), ",")[0]
	if tag == "-" {
		return ""
	}
	return tag
}

func hasFlag(flags, f string) bool {
	for _, x := range strings.Split(flags, ",") {
		if x == f {
			return true
		}
	}
	return false
}

// field is k's field in c.
func (k Key) field(c *Config) reflect.Value {
	return reflect.ValueOf(c).Elem().FieldByIndex(k.index)
}

// isSecret reports whether the dotted name is a secret key: a key marked
// secret, or a secret field of an upstream (upstreams.NAME.password).
func isSecret(name string) bool {
	if rest, ok := strings.CutPrefix(name, keyUpstreams+"."); ok {
		i := strings.LastIndexByte(rest, '.')
		if i < 0 {
			return false
		}
		sf, ok := upstreamField(rest[i+1:])
		return ok && hasFlag(sf.Tag.Get("berth"), "secret")
	}
	k, ok := LookupKey(name)
	return ok && k.Secret
}

// upstreamField is the field of Upstream with yaml name name.
func upstreamField(name string) (reflect.StructField, bool) {
	t := reflect.TypeOf(Upstream{})
	for i := 0; i < t.NumField(); i++ {
		if yamlName(t.Field(i)) == name {
			return t.Field(i), true
		}
	}
	return reflect.StructField{}, false
}

// Diff lists the keys whose values differ between a and b, sorted; the
// upstreams map counts as one key.
func Diff(a, b Config) []string {
	var out []string
	for _, k := range Keys() {
		if !reflect.DeepEqual(k.field(&a).Interface(), k.field(&b).Interface()) {
			out = append(out, k.Name)
		}
	}
	sort.Strings(out)
	return out
}

// Merge returns base with the named keys' values taken from from; unknown
// names are ignored.
func Merge(base, from Config, names []string) Config {
	for _, k := range Keys() {
		for _, n := range names {
			if k.Name == n {
				k.field(&base).Set(k.field(&from))
			}
		}
	}
	return base
}

// redactKeys replaces the value of every secret key that is set with
// "REDACTED" (an unset secret stays empty).
func redactKeys(c Config) Config {
	for _, k := range Keys() {
		if f := k.field(&c); k.Secret && f.Kind() == reflect.String && f.String() != "" {
			f.SetString(redacted)
		}
	}
	return c
}

// redacted is u with its secret fields (tagged berth:"secret") replaced.
func (u Upstream) redacted() Upstream {
	v := reflect.ValueOf(&u).Elem()
	for i := 0; i < v.NumField(); i++ {
		if hasFlag(v.Type().Field(i).Tag.Get("berth"), "secret") && v.Field(i).String() != "" {
			v.Field(i).SetString(redacted)
		}
	}
	return u
}

const redacted = "REDACTED"

// Map renders c, secrets redacted, as the YAML file's keys in nested maps
// (sizes and durations in their written form), ready for JSON.
func (c Config) Map() map[string]any {
	c = c.Redacted()
	out := map[string]any{}
	for _, k := range Keys() {
		m := out
		parts := strings.Split(k.Name, ".")
		for _, p := range parts[:len(parts)-1] {
			sub, ok := m[p].(map[string]any)
			if !ok {
				sub = map[string]any{}
				m[p] = sub
			}
			m = sub
		}
		m[parts[len(parts)-1]] = plain(k.field(&c))
	}
	return out
}

// plain is f's value as JSON should show it.
func plain(f reflect.Value) any {
	switch {
	case f.Type() == sizeType:
		return Size(f.Int()).String()
	case f.Type() == durationType:
		return Duration(f.Int()).String()
	case f.Kind() == reflect.Map:
		m := map[string]any{}
		iter := f.MapRange()
		for iter.Next() {
			u := iter.Value()
			fields := map[string]any{}
			for i := 0; i < u.NumField(); i++ {
				fields[yamlName(u.Type().Field(i))] = u.Field(i).Interface()
			}
			m[iter.Key().String()] = fields
		}
		return m
	default:
		return f.Interface()
	}
}
