package remote_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/turnbox/turnbox/internal/testenv"
)

// clientPkg is the client package whose dependencies the test checks.
const clientPkg = "github.com/turnbox/turnbox/remote"

// allowedDep reports whether the client may depend on the non-standard
// package p: the environment contract, the generated code, the client's
// own packages, connect and protobuf (which the generated code needs);
// nothing of the host and no other module.
func allowedDep(p string) bool {
	if p == clientPkg {
		return true
	}
	for _, prefix := range []string{
		"github.com/turnbox/turnbox/environment",
		clientPkg + "/gen/",
		clientPkg + "/internal/",
		"connectrpc.com/connect",
		"google.golang.org/protobuf/",
	} {
		if p == prefix || strings.HasPrefix(p, prefix) {
			return true
		}
	}
	return false
}

// TestClientDependencies: the client package builds for darwin and
// windows and links no host package (embedded, container, snapshot, zfs)
// and no module beyond connect and protobuf: a program that only talks
// to a turnbox server stays small and portable.
func TestClientDependencies(t *testing.T) {
	gobin := testenv.RequireBinary(t, "go")
	for _, goos := range []string{"darwin", "windows", "linux"} {
		t.Run(goos, func(t *testing.T) {
			env := append(os.Environ(), "GOOS="+goos, "GOARCH=amd64", "CGO_ENABLED=0")
			list := exec.Command(gobin, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", clientPkg)
			list.Env = env
			out, err := list.CombinedOutput()
			if err != nil {
				t.Fatalf("go list -deps %s for %s: %v\n%s", clientPkg, goos, err, out)
			}
			for _, p := range strings.Fields(string(out)) {
				if !allowedDep(p) {
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
