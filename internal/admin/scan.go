package admin

// scanner finds where one JSON value ends in a stream fed to it in pieces,
// without decoding it: it tracks string and escape state and bracket depth,
// so every byte is looked at once however the value is split across reads.
// It does not validate; the decoder does that, once, on the complete value.
type scanner struct {
	state scanState
	depth int   // open brackets, inside an object or array
	n     int64 // bytes consumed since the last reset
	start int64 // offset of the value's first byte, -1 before it
}

type scanState uint8

const (
	scanSpace  scanState = iota // before a value: whitespace is skipped
	scanNest                    // inside an object or array, outside strings
	scanString                  // inside a string
	scanEscape                  // after a backslash inside a string
	scanToken                   // a top-level number or literal
)

// scanResult says what feed found.
type scanResult uint8

const (
	scanMore scanResult = iota // the value has not ended yet
	scanDone                   // the value ends at s.n
	scanBad                    // a byte that cannot begin a JSON value
)

func newScanner() scanner { return scanner{start: -1} }

func (s *scanner) reset() { *s = newScanner() }

// started reports whether the value's first byte has been seen.
func (s *scanner) started() bool { return s.start >= 0 }

// feed scans p, the next bytes of the stream. It returns how many bytes of p
// it consumed and what it found; bytes after the end of a value are left.
func (s *scanner) feed(p []byte) (int, scanResult) {
	for i, b := range p {
		res := s.step(b)
		switch res {
		case scanDone:
			if s.state == scanToken {
				// A number or literal ends before the byte that ends it.
				s.state = scanSpace
				return i, scanDone
			}
			s.n++
			return i + 1, scanDone
		case scanBad:
			return i, scanBad
		}
		s.n++
	}
	return len(p), scanMore
}

// end reports, at the end of the input, whether a top-level number or literal
// was being scanned: then the value ends there.
func (s *scanner) end() bool { return s.state == scanToken }

func (s *scanner) step(b byte) scanResult {
	switch s.state {
	case scanSpace:
		return s.begin(b)
	case scanString:
		switch b {
		case '\\':
			s.state = scanEscape
		case '"':
			if s.depth == 0 {
				return scanDone
			}
			s.state = scanNest
		}
	case scanEscape:
		s.state = scanString
	case scanNest:
		switch b {
		case '"':
			s.state = scanString
		case '{', '[':
			s.depth++
		case '}', ']':
			s.depth--
			if s.depth == 0 {
				return scanDone
			}
		}
	case scanToken:
		if !isTokenByte(b) {
			return scanDone
		}
	}
	return scanMore
}

func (s *scanner) begin(b byte) scanResult {
	switch {
	case b == ' ' || b == '\t' || b == '\n' || b == '\r':
		return scanMore
	case b == '{' || b == '[':
		s.state, s.depth = scanNest, 1
	case b == '"':
		s.state = scanString
	case b == '-' || (b >= '0' && b <= '9') || b == 't' || b == 'f' || b == 'n':
		s.state = scanToken
	default:
		return scanBad
	}
	s.start = s.n
	return scanMore
}

func isTokenByte(b byte) bool {
	return b >= '0' && b <= '9' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b == '-' || b == '+' || b == '.'
}
