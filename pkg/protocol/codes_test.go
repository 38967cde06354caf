package protocol

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestCodesDocumented enumerates every Code constant in codes.go and
// requires a row for it in docs/protocol.md §6 with the client action its
// range implies, and no row for a code that codes.go does not define: an
// SDK is written from that table.
func TestCodesDocumented(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "codes.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	defined := map[Code]string{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			vs := spec.(*ast.ValueSpec)
			if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Code" {
				continue
			}
			for i, name := range vs.Names {
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok {
					t.Fatalf("%s: want a literal value", name.Name)
				}
				n, err := strconv.ParseUint(lit.Value, 10, 32)
				if err != nil {
					t.Fatalf("%s: %v", name.Name, err)
				}
				if other, dup := defined[Code(n)]; dup {
					t.Fatalf("%s and %s are both %d", other, name.Name, n)
				}
				defined[Code(n)] = name.Name
			}
		}
	}
	if len(defined) < 20 {
		t.Fatalf("found only %d codes in codes.go: is the parser looking at the right declarations?", len(defined))
	}

	doc, err := os.ReadFile("../../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	sec := string(doc)
	start := strings.Index(sec, "## 6. Codes")
	end := strings.Index(sec, "## 7. ")
	if start < 0 || end < start {
		t.Fatal("docs/protocol.md: no §6 Codes section")
	}
	row := regexp.MustCompile(`(?m)^\| (\d{4}) \|.*\| ([a-z ]+) \|$`)
	documented := map[Code]string{}
	for _, m := range row.FindAllStringSubmatch(sec[start:end], -1) {
		n, _ := strconv.ParseUint(m[1], 10, 32)
		documented[Code(n)] = m[2]
	}
	for c, name := range defined {
		action, ok := documented[c]
		if !ok {
			t.Errorf("%s (%d) has no row with a client action in docs/protocol.md §6", name, c)
			continue
		}
		if want := c.action(); action != want {
			t.Errorf("%s (%d): docs say %q, the range means %q", name, c, action, want)
		}
	}
	for c := range documented {
		if _, ok := defined[c]; !ok {
			t.Errorf("docs/protocol.md §6 documents %d, which codes.go does not define", c)
		}
	}
}

// action is the client action of the code's range, as §6 names it.
func (c Code) action() string {
	switch {
	case c.NeedsToken():
		return "new token"
	case c.Refusal():
		return "retry later"
	case c.Reconnect():
		return "reconnect"
	}
	return "stop"
}
