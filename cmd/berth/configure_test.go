package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-mirror/berth/internal/config"
	"github.com/pelletier/go-toml/v2"
)

func runConfigure(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = runConfigureContainerd(args, &out, &errb)
	return code, out.String(), errb.String()
}

func serverOf(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var h struct {
		Server string `toml:"server"`
	}
	if err := toml.Unmarshal(b, &h); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return h.Server
}

func TestConfigureContainerdBuiltinsThenUndo(t *testing.T) {
	dir := t.TempDir()
	code, out, errs := runConfigure(t, "--config-path", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	builtins := config.Builtins()
	if n := strings.Count(out, "written "); n != len(builtins) {
		t.Errorf("%d written lines, want %d:\n%s", n, len(builtins), out)
	}
	for name, u := range builtins {
		if got := serverOf(t, filepath.Join(dir, name, "hosts.toml")); got != u {
			t.Errorf("%s: server %q, want %q", name, got, u)
		}
	}
	code, out, _ = runConfigure(t, "--config-path", dir)
	if code != 0 || strings.Count(out, "unchanged ") != len(builtins) || strings.Contains(out, "written") {
		t.Errorf("second run exit %d:\n%s", code, out)
	}
	code, out, _ = runConfigure(t, "--config-path", dir, "--undo")
	if code != 0 || strings.Count(out, "removed ") != len(builtins) {
		t.Errorf("undo exit %d:\n%s", code, out)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("left after undo: %v", left)
	}
}

func TestConfigureContainerdRegistryAndBackup(t *testing.T) {
	dir := t.TempDir()
	orig := filepath.Join(dir, "registry.test:5000", "hosts.toml")
	if err := os.MkdirAll(filepath.Dir(orig), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(orig, []byte("server = \"https://elsewhere\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runConfigure(t, "--config-path", dir, "--mirror-url", "http://127.0.0.1:5999",
		"--registry", "registry.test:5000=http://127.0.0.1:9", "--dial-timeout", "750ms")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	want := fmt.Sprintf("backed up %s.berth-backup\nwritten %s\n", orig, orig)
	if out != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", out, want)
	}
	b, _ := os.ReadFile(orig)
	for _, s := range []string{`server = "http://127.0.0.1:9"`, `[host."http://127.0.0.1:5999"]`, `dial_timeout = "750ms"`} {
		if !bytes.Contains(b, []byte(s)) {
			t.Errorf("hosts.toml lacks %s:\n%s", s, b)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("--registry without --config should write only that registry, got %d dirs", len(entries))
	}
	code, out, _ = runConfigure(t, "--config-path", dir, "--undo")
	if code != 0 || out != "restored "+orig+"\n" {
		t.Errorf("undo exit %d:\n%s", code, out)
	}
	if got := serverOf(t, orig); got != "https://elsewhere" {
		t.Errorf("restored server %q", got)
	}
}

func TestConfigureContainerdFromConfigFile(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(t.TempDir(), "berth.yaml")
	yaml := "upstreams:\n  registry.test:5000:\n    url: http://127.0.0.1:5001\n  docker.io:\n    url: http://127.0.0.1:5002\n"
	if err := os.WriteFile(cfgFile, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errs := runConfigure(t, "--config-path", dir, "--config", cfgFile, "--registry", "extra.test=https://extra.test")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for name, want := range map[string]string{
		"registry.test:5000": "http://127.0.0.1:5001",
		"docker.io":          "http://127.0.0.1:5002",
		"ghcr.io":            "https://ghcr.io",
		"extra.test":         "https://extra.test",
	} {
		if got := serverOf(t, filepath.Join(dir, name, "hosts.toml")); got != want {
			t.Errorf("%s: server %q, want %q", name, got, want)
		}
	}
}

func TestConfigureContainerdExitCodes(t *testing.T) {
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	badCfg := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(badCfg, []byte("tag_ttl: soon\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"help", []string{"-h"}, 0, "usage: berth configure-containerd"},
		{"unknown flag", []string{"--nope"}, 2, "flag provided but not defined"},
		{"positional", []string{"extra"}, 2, "unexpected argument"},
		{"registry without =", []string{"--registry", "docker.io"}, 2, "NAME=URL"},
		{"bad registry name", []string{"--registry", "../x=https://x"}, 2, "registry name"},
		{"bad upstream URL", []string{"--registry", "x.test=x.test"}, 2, "upstream URL"},
		{"bad mirror URL", []string{"--mirror-url", "127.0.0.1:5000"}, 2, "mirror URL"},
		{"bad dial timeout", []string{"--dial-timeout", "soon"}, 2, "dial-timeout"},
		{"bad config file", []string{"--config", badCfg}, 2, "tag_ttl: invalid value"},
		{"missing config file", []string{"--config", badCfg + ".missing"}, 2, "reading"},
		{"bad data owner", []string{"--data-dir", t.TempDir(), "--data-owner", "berth"}, 2, "UID:GID"},
		{"config path is a file", []string{"--config-path", notDir}, 1, "not a directory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--config-path", t.TempDir()}, tc.args...)
			code, _, errs := runConfigure(t, args...)
			if code != tc.code || !strings.Contains(errs, tc.msg) {
				t.Errorf("exit %d (want %d), stderr:\n%s\nwant it to mention %q", code, tc.code, errs, tc.msg)
			}
		})
	}
}

func TestConfigureContainerdDataDir(t *testing.T) {
	data := filepath.Join(t.TempDir(), "var", "lib", "berth")
	owner := fmt.Sprintf("%d:%d", os.Getuid(), os.Getgid())
	code, out, errs := runConfigure(t, "--config-path", t.TempDir(), "--data-dir", data, "--data-owner", owner)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if !strings.HasPrefix(out, "unchanged "+data+"\n") {
		t.Errorf("stdout:\n%s", out)
	}
	if fi, err := os.Stat(data); err != nil || !fi.IsDir() {
		t.Fatalf("data dir: %v", err)
	}
}
