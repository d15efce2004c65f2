package server

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// TestNoExportedPackageVariables: configuration reaches the server through
// New, never through package state another caller could change under it.
func TestNoExportedPackageVariables(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.VAR {
				continue
			}
			for _, s := range g.Specs {
				for _, n := range s.(*ast.ValueSpec).Names {
					if n.IsExported() {
						t.Errorf("%s: exported package variable %s", name, n.Name)
					}
				}
			}
		}
	}
}

// TestWithVersion: the version given to New is what the admin status reports.
func TestWithVersion(t *testing.T) {
	cfg := testConfig(t)
	s, err := New(cfg, quiet(), WithVersion("1.2.3"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	if s.version != "1.2.3" || s.Upstreams.userAgent != "berth/1.2.3" {
		t.Errorf("version %q, user agent %q", s.version, s.Upstreams.userAgent)
	}
}
