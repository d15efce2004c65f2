package config

import (
	"errors"
	"strings"
	"testing"
)

// TestMaxManifestBytes: the manifest cap comes from the file or
// BERTH_MAX_MANIFEST_BYTES, defaults to distribution's 4 MiB, and a value
// outside 4Ki..64Mi is an error naming the key.
func TestMaxManifestBytes(t *testing.T) {
	if got := Default().MaxManifestBytes; got != 4<<20 {
		t.Errorf("default %d, want 4Mi", got)
	}
	tests := []struct {
		value   string
		want    Size
		wantErr bool
	}{
		{"1Mi", 1 << 20, false},
		{"64Mi", 64 << 20, false},
		{"1Ki", 0, true},
		{"1Gi", 0, true},
		{"lots", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			c, err := Load("", func(k string) (string, bool) {
				if k == "BERTH_MAX_MANIFEST_BYTES" {
					return tt.value, true
				}
				return "", false
			})
			if err == nil {
				err = c.Validate()
			}
			var ce *Error
			if tt.wantErr {
				if !errors.As(err, &ce) || !strings.HasPrefix(ce.Key, "max_manifest_bytes") {
					t.Fatalf("err = %v, want an error naming max_manifest_bytes", err)
				}
				return
			}
			if err != nil || c.MaxManifestBytes != tt.want {
				t.Fatalf("MaxManifestBytes = %d (%v), want %d", c.MaxManifestBytes, err, tt.want)
			}
		})
	}
}
