package rootfs

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExtractTarStaysInside feeds extractTar streams that mutate.Extract
// would not produce (paths under a symlink) and checks that every write
// lands inside the root: symlinks are resolved as the sandbox resolves
// them, with the root as "/".
func TestExtractTarStaysInside(t *testing.T) {
	top := t.TempDir()
	outside := filepath.Join(top, "outside")
	if err := os.Mkdir(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(top, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h *tar.Header, body string) {
		h.Size = int64(len(body))
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	add(&tar.Header{Name: "up", Typeflag: tar.TypeSymlink, Linkname: "../../../../../.."}, "")
	add(&tar.Header{Name: "up/" + strings.TrimPrefix(outside, "/") + "/pwned", Typeflag: tar.TypeReg}, "x")
	add(&tar.Header{Name: "abs", Typeflag: tar.TypeSymlink, Linkname: outside}, "")
	add(&tar.Header{Name: "abs/pwned2", Typeflag: tar.TypeReg}, "x")
	add(&tar.Header{Name: "abs/sub", Typeflag: tar.TypeDir, Mode: 0o777}, "")
	add(&tar.Header{Name: "hl", Typeflag: tar.TypeLink, Linkname: "abs/pwned"}, "")
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	var res ImportResult
	if err := extractTar(context.Background(), &buf, root, &res); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("extraction wrote outside the root: %v", ents)
	}
	inside := filepath.Join(root, strings.TrimPrefix(outside, "/"))
	for _, p := range []string{"pwned", "pwned2", "sub"} {
		if _, err := os.Lstat(filepath.Join(inside, p)); err != nil {
			t.Errorf("%s not written inside the root: %v", p, err)
		}
	}
	if fi, err := os.Lstat(filepath.Join(root, "hl")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("hard link through a symlinked directory: %v", err)
	}
}

// TestExtractTarDanglingSymlinkParent checks that an entry under a symlink
// to a directory that does not exist fails, and writes nothing outside.
func TestExtractTarDanglingSymlinkParent(t *testing.T) {
	top := t.TempDir()
	root := filepath.Join(top, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: "abs", Typeflag: tar.TypeSymlink, Linkname: filepath.Join(top, "outside")},
		{Name: "abs/pwned", Typeflag: tar.TypeReg, Mode: 0o644},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	var res ImportResult
	err := extractTar(context.Background(), &buf, root, &res)
	if err == nil || !strings.Contains(err.Error(), "symlink to a missing directory") {
		t.Fatalf("err = %v", err)
	}
	if ents, _ := os.ReadDir(top); len(ents) != 1 {
		t.Errorf("entries beside the root: %v", ents)
	}
}
