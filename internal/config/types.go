package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Size is a byte count written as 512Mi, 20Gi, 10GB or a plain number.
type Size int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"k", 1e3}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12},
	{"B", 1},
}

// ParseSize parses a size such as 512Mi, 20Gi, 10GB or 1048576.
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	// Longest suffix first so that "MiB" is not read as "B".
	best := ""
	for _, u := range sizeUnits {
		if strings.HasSuffix(t, u.suffix) && len(u.suffix) > len(best) {
			best, mult = u.suffix, u.mult
		}
	}
	num := strings.TrimSpace(strings.TrimSuffix(t, best))
	n, err := strconv.ParseFloat(num, 64)
	if err != nil || n < 0 || num == "" {
		return 0, fmt.Errorf("invalid size %q: expected a number with an optional unit (Ki, Mi, Gi, KB, MB, GB)", s)
	}
	v := n * float64(mult)
	if v > 1<<62 {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return Size(v), nil
}

func (s Size) String() string {
	v := int64(s)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"Ti", 1 << 40}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}} {
		if v != 0 && v%u.mult == 0 {
			return strconv.FormatInt(v/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(v, 10)
}

// UnmarshalYAML accepts a string with units or a plain integer.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseSize(n.Value)
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// MarshalYAML writes the size with its largest exact unit.
func (s Size) MarshalYAML() (any, error) { return s.String(), nil }

// MarshalText makes JSON output readable too.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Duration is a time.Duration written in Go syntax (90s, 5m).
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML parses Go duration syntax.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("invalid duration %q: expected Go syntax such as 90s or 5m", n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes Go duration syntax.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// MarshalText makes JSON output readable too.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }
