package remote_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// clientPkg is the client package whose dependencies the test checks.
const clientPkg = "github.com/turnbox/turnbox/remote"

// allowedTurnbox reports whether the client may depend on the turnbox
// package p: the environment contract, the generated code and the
// client's own (internal) packages; nothing of the host.
func allowedTurnbox(p string) bool {
	for _, ok := range []string{"github.com/turnbox/turnbox/environment", clientPkg + "/gen/", clientPkg + "/internal/"} {
		if p == ok || strings.HasPrefix(p, ok) {
			return true
		}
	}
	return p == clientPkg
}

// goTool returns the go command that built the test, or skips.
func goTool(t *testing.T) string {
	t.Helper()
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		if gobin, err = exec.LookPath("go"); err != nil {
			t.Skip("no go command to list dependencies with")
		}
	}
	return gobin
}

// TestClientDependencies: the client package builds for darwin and
// windows and links no host package (embedded, container, snapshot, zfs):
// a program that only talks to a turnbox server stays small and portable.
func TestClientDependencies(t *testing.T) {
	gobin := goTool(t)
	for _, goos := range []string{"darwin", "windows", "linux"} {
		t.Run(goos, func(t *testing.T) {
			env := append(os.Environ(), "GOOS="+goos, "GOARCH=amd64", "CGO_ENABLED=0")
			list := exec.Command(gobin, "list", "-deps", "-f", "{{.ImportPath}}", clientPkg)
			list.Env = env
			out, err := list.CombinedOutput()
			if err != nil {
				t.Fatalf("go list -deps %s for %s: %v\n%s", clientPkg, goos, err, out)
			}
			for _, p := range strings.Fields(string(out)) {
				if strings.HasPrefix(p, "github.com/turnbox/turnbox") && !allowedTurnbox(p) {
					t.Errorf("%s depends on %s (GOOS=%s)", clientPkg, p, goos)
				}
				for _, host := range []string{"embedded", "container", "snapshot", "zfs"} {
					if strings.HasPrefix(p, "github.com/turnbox/turnbox/"+host) {
						t.Errorf("%s links the host package %s", clientPkg, p)
					}
				}
			}
			build := exec.Command(gobin, "build", clientPkg)
			build.Env = env
			if out, err := build.CombinedOutput(); err != nil {
				t.Fatalf("GOOS=%s go build %s: %v\n%s", goos, clientPkg, err, out)
			}
		})
	}
}
