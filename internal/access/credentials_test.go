package access

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
)

func TestAuthParseAuthorization(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	cases := []struct {
		name    string
		headers []string
		want    Credentials
		wantErr bool
	}{
		{"none", nil, Credentials{}, false},
		{"basic", []string{"Basic " + b64("alice:pw")}, Credentials{"alice", "pw"}, false},
		{"scheme case", []string{"bAsIc " + b64("alice:pw")}, Credentials{"alice", "pw"}, false},
		{"colon in password", []string{"Basic " + b64("alice:p:w")}, Credentials{"alice", "p:w"}, false},
		{"no padding", []string{"Basic " + strings.TrimRight(b64("al:p"), "=")}, Credentials{"al", "p"}, false},
		{"empty user and password is anonymous", []string{"Basic " + b64(":")}, Credentials{}, false},
		{"token as password", []string{"Basic " + b64("AWS:"+strings.Repeat("x", 3000))}, Credentials{"AWS", strings.Repeat("x", 3000)}, false},
		{"empty header", []string{""}, Credentials{}, false},
		{"bearer", []string{"Bearer abc"}, Credentials{}, true},
		{"no colon", []string{"Basic " + b64("alice")}, Credentials{}, true},
		{"bad base64", []string{"Basic ***"}, Credentials{}, true},
		{"control character", []string{"Basic " + b64("al\x00ice:pw")}, Credentials{}, true},
		{"two headers", []string{"Basic " + b64("a:b"), "Basic " + b64("c:d")}, Credentials{}, true},
		{"too large", []string{"Basic " + strings.Repeat("A", maxAuthorization)}, Credentials{}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tc.headers {
				h.Add("Authorization", v)
			}
			got, err := ParseAuthorization(h)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("got %v, %v; want %v, error %v", got, err, tc.want, tc.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "alice") {
				t.Fatalf("error %q shows the header", err)
			}
		})
	}
	if s := (Credentials{"alice", "pw"}).String(); strings.Contains(s, "pw") || strings.Contains(s, "alice") {
		t.Fatalf("String() = %q shows the credentials", s)
	}
}

// FuzzAuthParseAuthorization: never a panic; an error never echoes the
// input; what parses has no control characters and re-encodes to the same
// user-pass.
func FuzzAuthParseAuthorization(f *testing.F) {
	for _, s := range []string{
		"", "Basic YWxpY2U6cHc=", "Basic YWxpY2U6cHc", "basic Og==", "Bearer x", "Basic", "Basic ",
		"Basic !!!!", "Basic YWxpY2U=", "Basic AA==", "Negotiate YWxpY2U6cHc=", "Basic  YWxpY2U6cHc=  ",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		h := http.Header{"Authorization": {v}}
		c, err := ParseAuthorization(h)
		if err != nil {
			if c != (Credentials{}) {
				t.Fatal("credentials returned with an error")
			}
			if len(v) > 8 && strings.Contains(err.Error(), v) {
				t.Fatal("error echoes the header")
			}
			return
		}
		if strings.ContainsFunc(c.Username, isCtl) || strings.ContainsFunc(c.Password, isCtl) || strings.Contains(c.Username, ":") {
			t.Fatalf("accepted %q", v)
		}
		if !c.Empty() {
			again, err := parseBasic("Basic " + base64.StdEncoding.EncodeToString([]byte(c.Username+":"+c.Password)))
			if err != nil || again != c {
				t.Fatalf("round trip: %v %v", again, err)
			}
		}
	})
}
