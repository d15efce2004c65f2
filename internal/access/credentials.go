package access

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"unicode/utf8"
)

// Credentials are a client's own username and password for the registry a
// request is for, taken from its Authorization header. They live only in
// memory: for the request, for a fill that needs them, and inside the
// decision cache's per-credential upstream clients. Their String never
// shows them.
type Credentials struct {
	Username, Password string
}

// String hides the secret: a Credentials that ends up in a log line or an
// error message shows nothing of it.
func (c Credentials) String() string {
	if c.Empty() {
		return "anonymous"
	}
	return "credentials(redacted)"
}

// GoString hides the secret from %#v too.
func (c Credentials) GoString() string { return c.String() }

// Empty reports whether there are no credentials (anonymous). Some clients
// (containers/image) send "Basic Og==", an empty username and password,
// when they have nothing: that is anonymous too.
func (c Credentials) Empty() bool { return c.Username == "" && c.Password == "" }

// maxAuthorization bounds the header berth will decode. Registry tokens used
// as passwords (ECR: ~2 KiB, GCP access tokens, JWTs) fit well within it.
const maxAuthorization = 16 << 10

// Authorization errors; their messages never contain the header.
var (
	errAuthScheme    = errors.New("only Basic authorization is accepted by this mirror")
	errAuthMalformed = errors.New("malformed Basic authorization")
	errAuthTooLarge  = errors.New("authorization header too large")
	errAuthMultiple  = errors.New("more than one Authorization header")
)

// ParseAuthorization reads a client's Basic credentials from the request
// headers (RFC 7617). No header, or an empty user and password, is
// anonymous. A Bearer token is refused: berth never issues one, and a token
// meant for another registry must not be replayed there by the mirror.
func ParseAuthorization(h http.Header) (Credentials, error) {
	vs := h.Values("Authorization")
	switch len(vs) {
	case 0:
		return Credentials{}, nil
	case 1:
	default:
		return Credentials{}, errAuthMultiple
	}
	return parseBasic(vs[0])
}

func parseBasic(v string) (Credentials, error) {
	if len(v) > maxAuthorization {
		return Credentials{}, errAuthTooLarge
	}
	v = strings.TrimSpace(v)
	if v == "" {
		return Credentials{}, nil
	}
	scheme, param, _ := strings.Cut(v, " ")
	if !strings.EqualFold(scheme, "Basic") {
		return Credentials{}, errAuthScheme
	}
	param = strings.TrimSpace(param)
	raw, err := base64.StdEncoding.DecodeString(param)
	if err != nil {
		// Some clients leave the padding off.
		raw, err = base64.RawStdEncoding.DecodeString(param)
		if err != nil {
			return Credentials{}, errAuthMalformed
		}
	}
	user, pass, ok := strings.Cut(string(raw), ":")
	if !ok || !utf8.ValidString(user) || strings.ContainsFunc(user, isCtl) || strings.ContainsFunc(pass, isCtl) {
		return Credentials{}, errAuthMalformed
	}
	return Credentials{Username: user, Password: pass}, nil
}

// isCtl reports the control characters RFC 7617 forbids in user-pass.
func isCtl(r rune) bool { return r < 0x20 || r == 0x7f }
