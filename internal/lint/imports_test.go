package lint

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/msync/msync"

// tiers never import each other (gateway is a library of comet, not a tier).
var tiers = []string{"comet", "logic", "job"}

// clusterUsers may import internal/cluster, the assembly of the tiers into one
// process. "web" is here for its browser test alone (a test file, like e2e:
// it starts a whole node); web's own code may not.
var clusterUsers = map[string]bool{"cmd": true, "e2e": true, "internal/cluster": true}
var clusterTestUsers = map[string]bool{"web": true}

// pkgInfo is the part of `go list -json` the rules need.
type pkgInfo struct {
	ImportPath string
	ForTest    string
	Deps       []string
	Error      *struct{ Err string }
}

// TestForbiddenImports fails when a package (its code, or its tests with
// everything they pull in) depends on a package it must not: a tier on
// another tier, pkg/ or gateway/ on a tier, comet on the store, or anything
// but cmd/ and e2e on internal/cluster. It reads the real import graph with
// `go list -test -json ./...`, transitive dependencies included.
func TestForbiddenImports(t *testing.T) {
	cmd := exec.Command("go", "list", "-e", "-test", "-json", module+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	pkgs, err := decode(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) < 20 {
		t.Fatalf("go list returned %d packages: the module should have dozens", len(pkgs))
	}
	checked := 0
	for _, p := range pkgs {
		if p.Error != nil {
			t.Errorf("%s: %s (its dependencies cannot be checked)", p.ImportPath, p.Error.Err)
		}
		for _, v := range violations(p) {
			t.Error(v)
		}
		checked++
	}
	t.Logf("checked the dependencies of %d packages and test variants", checked)
}

// TestRulesCatch feeds the rules made-up packages, so a rule that stopped
// matching (a typo in a prefix) shows here even while the tree is clean.
func TestRulesCatch(t *testing.T) {
	for _, c := range []struct {
		pkg, dep, forTest string
		bad               bool
	}{
		{"comet", "logic", "", true},
		{"comet/x", "job/y", "", true},
		{"logic", "comet", "", true},
		{"job", "logic", "", true},
		{"pkg/client", "comet", "", true},
		{"gateway/wheel", "logic", "", true},
		{"comet", "pkg/store", "", true},
		{"comet", "pkg/store/pebble", "", true},
		{"logic", "internal/cluster", "", true},
		{"pkg/client", "internal/cluster", "", true},
		{"web", "internal/cluster", "", true},
		{"bench", "internal/cluster", "", true},
		{"web_test", "internal/cluster", "web", false},
		{"cmd/msync", "internal/cluster", "", false},
		{"e2e", "internal/cluster", "", false},
		{"e2e_test", "internal/cluster", "e2e", false},
		{"comet", "gateway", "", false},
		{"comet", "pkg/protocol", "", false},
		{"logic", "pkg/store/pebble", "", false},
		{"logic", "logic/internal", "", false},
		{"cometx", "logic", "", false}, // a prefix of a name is not the tier
		{"internal/cluster", "comet", "", false},
	} {
		p := pkgInfo{ImportPath: module + "/" + c.pkg, Deps: []string{module + "/" + c.dep, "fmt"}}
		if c.forTest != "" {
			p.ImportPath += " [" + module + "/" + c.forTest + ".test]"
			p.ForTest = module + "/" + c.forTest
		}
		if got := len(violations(p)) > 0; got != c.bad {
			t.Errorf("%s importing %s (test of %q): violation = %v, want %v", c.pkg, c.dep, c.forTest, got, c.bad)
		}
	}
}

func decode(out []byte) ([]pkgInfo, error) {
	var pkgs []pkgInfo
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkgInfo
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			return pkgs, nil
		} else if err != nil {
			return nil, fmt.Errorf("decoding go list output: %w", err)
		}
		pkgs = append(pkgs, p)
	}
}

// violations lists the forbidden dependencies of p.
func violations(p pkgInfo) []string {
	path, isTest := rel(p.ImportPath), p.ForTest != ""
	if path == "" || strings.HasSuffix(path, ".test") { // outside the module; a test main
		return nil
	}
	path = strings.TrimSuffix(path, "_test")
	var bad []string
	for _, d := range p.Deps {
		dep := rel(d)
		if dep == "" {
			continue
		}
		if why := forbidden(path, dep, isTest); why != "" {
			what := path
			if isTest {
				what += " (tests)"
			}
			bad = append(bad, fmt.Sprintf("%s depends on %s: %s", what, dep, why))
		}
	}
	sort.Strings(bad)
	return bad
}

// forbidden says why pkg may not depend on dep, or "" when it may.
func forbidden(pkg, dep string, isTest bool) string {
	pt, dt := tierOf(pkg), tierOf(dep)
	switch {
	case pt != "" && dt != "" && pt != dt:
		return "tiers never import each other"
	case dt != "" && (under(pkg, "pkg") || under(pkg, "gateway")):
		return "pkg/ and gateway/ are libraries of the tiers and never import one"
	case pt == "comet" && under(dep, "pkg/store"):
		return "comet reads oplogs through logic, never from the store"
	case under(dep, "internal/cluster") && !clusterUsers[top(pkg)] && !clusterUsers[pkg] && !(isTest && clusterTestUsers[pkg]):
		return "only cmd/ and e2e assemble tiers with internal/cluster"
	}
	return ""
}

// rel strips the module path and a test variant suffix; "" outside the module.
func rel(importPath string) string {
	p, _, _ := strings.Cut(importPath, " ")
	if p == module {
		return "."
	}
	r, ok := strings.CutPrefix(p, module+"/")
	if !ok {
		return ""
	}
	return r
}

func tierOf(p string) string {
	for _, t := range tiers {
		if under(p, t) {
			return t
		}
	}
	return ""
}

// under reports whether p is dir or a package below it.
func under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

func top(p string) string { f, _, _ := strings.Cut(p, "/"); return f }
