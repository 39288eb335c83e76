package wsreliable_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// runtimePackages are the packages a user of wsreliable compiles in. Their
// non-test dependencies may come only from the standard library, this
// module and allowedModules (DESIGN.md, "Packages").
var runtimePackages = []string{"./reliable", "./queue", "./ack", "./protocol"}

// allowedModules are the card's dependencies, and golang.org/x/sys, which
// bbolt needs.
var allowedModules = []string{
	"github.com/gorilla/websocket",
	"go.etcd.io/bbolt",
	"github.com/google/uuid",
	"golang.org/x/sys",
}

// depsGOOS are the systems whose builds are checked: a dependency can
// come in through a file for one system only.
var depsGOOS = []string{"linux", "darwin", "windows"}

// TestRuntimeDependencies fails if a runtime package imports, directly or
// through another package, anything outside the standard library, this
// module and allowedModules. Test files' imports (goleak) do not count.
func TestRuntimeDependencies(t *testing.T) {
	for _, goos := range depsGOOS {
		t.Run(goos, func(t *testing.T) {
			g := listDeps(t, goos, runtimePackages...)
			for _, v := range g.forbidden(allowedModules) {
				t.Errorf("GOOS=%s: %s; runtime packages may import only the standard library, this module (%s) and the modules %s",
					goos, v, g.main, strings.Join(allowedModules, ", "))
			}
		})
	}
}

// TestDependencyCheckCatches runs the check on a package outside the
// allowed set (goleak, a test-only dependency), so that a check that
// finds nothing because it is broken cannot pass TestRuntimeDependencies.
func TestDependencyCheckCatches(t *testing.T) {
	g := listDeps(t, "linux", "go.uber.org/goleak")
	vs := g.forbidden(allowedModules)
	if len(vs) == 0 || !strings.Contains(vs[0].String(), "go.uber.org/goleak") {
		t.Fatalf("dependency check on go.uber.org/goleak found %v, want goleak named", vs)
	}
}

// depGraph is the output of go list -deps for some root packages.
type depGraph struct {
	main    string              // this module's path
	roots   []string            // import paths of the roots, in order
	module  map[string]string   // import path -> module path ("" for std)
	imports map[string][]string // import path -> its non-test imports
}

// listDeps runs go list -deps on pkgs for goos and parses its output.
func listDeps(tb testing.TB, goos string, pkgs ...string) *depGraph {
	tb.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		tb.Fatalf("the dependency check needs the go command: %v", err)
	}
	run := func(args ...string) string {
		tb.Helper()
		cmd := exec.Command(goBin, args...)
		// GOWORK=off: the root module alone, as a user requiring it gets it
		// (go.work adds the CLI and the adapters as main modules).
		cmd.Env = append(os.Environ(), "GOOS="+goos, "GOWORK=off")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			tb.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return string(out)
	}
	g := &depGraph{
		main:    strings.TrimSpace(run("list", "-m")),
		module:  map[string]string{},
		imports: map[string][]string{},
	}
	g.roots = strings.Fields(run(append([]string{"list"}, pkgs...)...))
	const format = `{{.ImportPath}}{{"\t"}}{{if not .Standard}}{{with .Module}}{{.Path}}{{end}}{{end}}{{"\t"}}{{join .Imports " "}}`
	for line := range strings.Lines(run(append([]string{"list", "-deps", "-f", format}, pkgs...)...)) {
		f := strings.Split(strings.TrimRight(line, "\n"), "\t")
		if len(f) != 3 {
			tb.Fatalf("go list -deps: unexpected line %q", line)
		}
		g.module[f[0]] = f[1]
		g.imports[f[0]] = strings.Fields(f[2])
	}
	return g
}

// violation is a package from a module outside the allowed set, and the
// import chain from a root package to it.
type violation struct {
	pkg, module string
	chain       []string
}

func (v violation) String() string {
	if len(v.chain) == 1 {
		return fmt.Sprintf("%s is from module %s", v.pkg, v.module)
	}
	return fmt.Sprintf("%s imports %s (module %s), pulled in by %s: %s",
		v.chain[0], v.pkg, v.module, v.chain[len(v.chain)-2], strings.Join(v.chain, " -> "))
}

// forbidden returns, for each package from a module that is neither the
// main module nor allowed, the shortest import chain from a root to it.
// Packages reached only through another forbidden package are left out:
// the first forbidden package on the way is the one to remove.
func (g *depGraph) forbidden(allowed []string) []violation {
	ok := func(pkg string) bool {
		m := g.module[pkg]
		return m == "" || m == g.main || slices.Contains(allowed, m)
	}
	var vs []violation
	seen := map[string]bool{}
	for _, root := range g.roots {
		// Breadth first, so each chain is a shortest one.
		prev := map[string]string{root: ""}
		queue := []string{root}
		for len(queue) > 0 {
			pkg := queue[0]
			queue = queue[1:]
			if !ok(pkg) {
				if !seen[pkg] {
					seen[pkg] = true
					var chain []string
					for p := pkg; p != ""; p = prev[p] {
						chain = append(chain, p)
					}
					slices.Reverse(chain)
					vs = append(vs, violation{pkg: pkg, module: g.module[pkg], chain: chain})
				}
				continue
			}
			for _, imp := range g.imports[pkg] {
				if _, done := prev[imp]; !done {
					prev[imp] = pkg
					queue = append(queue, imp)
				}
			}
		}
	}
	return vs
}
