package registry

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// An upstream tag list is {"name":"…","tags":["…",…]}, possibly with other
// members. decodeTags reads one a byte at a time from a buffered reader and
// holds at most one string of it: a list of any length costs the same
// memory, and what the client gets is re-encoded from tags checked against
// the spec's grammar, never the upstream's bytes.

// maxTagLength is the spec's: [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}.
const maxTagLength = 128

var errTagList = errors.New("malformed tag list")

type tagDecoder struct {
	r   *bufio.Reader
	buf [maxTagLength]byte
}

// decodeTags calls emit with each tag of the list in r, in order; the slice
// is valid only during the call.
func decodeTags(r *bufio.Reader, emit func(tag []byte)) error {
	d := &tagDecoder{r: r}
	if c, err := d.nonSpace(); err != nil || c != '{' {
		return d.fail(err, "expected an object")
	}
	c, err := d.nonSpace()
	if err != nil {
		return d.fail(err, "unterminated object")
	}
	seenTags := false
	for c != '}' {
		if c != '"' {
			return d.fail(nil, "expected a member name")
		}
		key, ok, err := d.str()
		if err != nil {
			return err
		}
		if c, err := d.nonSpace(); err != nil || c != ':' {
			return d.fail(err, "expected ':'")
		}
		if ok && string(key) == "tags" && !seenTags {
			seenTags = true
			err = d.tags(emit)
		} else {
			err = d.skipValue()
		}
		if err != nil {
			return err
		}
		if c, err = d.nonSpace(); err != nil {
			return d.fail(err, "unterminated object")
		}
		if c == ',' {
			if c, err = d.nonSpace(); err != nil {
				return d.fail(err, "unterminated object")
			}
		} else if c != '}' {
			return d.fail(nil, "expected ',' or '}'")
		}
	}
	if _, err := d.nonSpace(); err != io.EOF {
		return d.fail(err, "data after the object")
	}
	return nil
}

// tags reads the tags member's value: null or an array of tags.
func (d *tagDecoder) tags(emit func([]byte)) error {
	c, err := d.nonSpace()
	if err != nil {
		return d.fail(err, "expected the tags")
	}
	if c == 'n' {
		return d.literal("ull")
	}
	if c != '[' {
		return d.fail(nil, "tags is not an array")
	}
	if c, err = d.nonSpace(); err != nil {
		return d.fail(err, "unterminated tags")
	}
	for c != ']' {
		if c != '"' {
			return d.fail(nil, "a tag is not a string")
		}
		tag, ok, err := d.str()
		if err != nil {
			return err
		}
		if !ok || !validTag(tag) {
			return d.fail(nil, fmt.Sprintf("invalid tag %q", truncate(string(tag), 32)))
		}
		emit(tag)
		if c, err = d.nonSpace(); err != nil {
			return d.fail(err, "unterminated tags")
		}
		if c == ',' {
			if c, err = d.nonSpace(); err != nil {
				return d.fail(err, "unterminated tags")
			}
		} else if c != ']' {
			return d.fail(nil, "expected ',' or ']'")
		}
	}
	return nil
}

func validTag(t []byte) bool {
	if len(t) == 0 || len(t) > maxTagLength {
		return false
	}
	for i, c := range t {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_':
		case (c == '.' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

// str reads a string after its opening quote. It returns the string when it
// has no escapes and fits the buffer (ok), else consumes it and returns !ok.
func (d *tagDecoder) str() (s []byte, ok bool, err error) {
	n, ok := 0, true
	for {
		c, err := d.r.ReadByte()
		if err != nil {
			return nil, false, d.fail(err, "unterminated string")
		}
		switch {
		case c == '"':
			return d.buf[:n], ok, nil
		case c == '\\':
			ok = false
			if _, err := d.r.ReadByte(); err != nil {
				return nil, false, d.fail(err, "unterminated string")
			}
		case c < 0x20:
			return nil, false, d.fail(nil, "control character in a string")
		case n < len(d.buf):
			d.buf[n] = c
			n++
		default:
			ok = false
		}
	}
}

// skipValue consumes one value of any kind, keeping only its depth.
func (d *tagDecoder) skipValue() error {
	depth := 0
	for {
		c, err := d.nonSpace()
		if err != nil {
			return d.fail(err, "unterminated value")
		}
		switch c {
		case '"':
			if _, _, err := d.str(); err != nil {
				return err
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return d.fail(nil, "unexpected "+string(c))
			}
			depth--
		case ',', ':':
			if depth == 0 {
				return d.fail(nil, "missing value")
			}
		default:
			if err := d.skipLiteral(); err != nil {
				return err
			}
		}
		if depth == 0 {
			return nil
		}
	}
}

// skipLiteral consumes the rest of a number, true, false or null.
func (d *tagDecoder) skipLiteral() error {
	for {
		c, err := d.r.ReadByte()
		if err != nil {
			return d.fail(err, "unterminated value")
		}
		if !literalByte(c) {
			return d.r.UnreadByte()
		}
	}
}

// literalByte reports whether c may continue a number, true, false or null.
func literalByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '+' || c == '-' || c == 'E'
}

// literal consumes the expected rest of a literal.
func (d *tagDecoder) literal(rest string) error {
	for i := range len(rest) {
		if c, err := d.r.ReadByte(); err != nil || c != rest[i] {
			return d.fail(err, "invalid literal")
		}
	}
	return nil
}

func (d *tagDecoder) nonSpace() (byte, error) {
	for {
		c, err := d.r.ReadByte()
		if err != nil {
			return 0, err
		}
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return c, nil
		}
	}
}

// fail describes a malformed list; a read error other than the end of the
// body is kept as the cause.
func (d *tagDecoder) fail(err error, what string) error {
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: %s: %w", errTagList, what, err)
	}
	return fmt.Errorf("%w: %s", errTagList, what)
}
