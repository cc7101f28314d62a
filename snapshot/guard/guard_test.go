//go:build linux

package guard_test

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/turnbox/turnbox/internal/testenv"
	"github.com/turnbox/turnbox/snapshot/guard"
)

// sealedDir makes dir/workspace and seals dir, skipping where the
// filesystem or process cannot.
func sealedDir(t *testing.T) (dir string) {
	t.Helper()
	testenv.RequireRoot(t)
	dir = t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "workspace"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := guard.SealSupported(dir)
	testenv.Require(t, err == nil, "a temporary directory that can be sealed (chattr +i)")
	if err := guard.Seal(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { guard.Unseal(dir) })
	return dir
}

func TestSealRefusesChanges(t *testing.T) {
	dir := sealedDir(t)
	ws := filepath.Join(dir, "workspace")
	for what, err := range map[string]error{
		"rename":  os.Rename(ws, filepath.Join(dir, "x")),
		"symlink": os.Symlink("/", filepath.Join(dir, "link")),
		"mkdir":   os.Mkdir(filepath.Join(dir, "d"), 0o755),
		"remove":  os.Remove(ws),
	} {
		if !errors.Is(err, syscall.EPERM) {
			t.Errorf("%s in a sealed directory: %v, want EPERM", what, err)
		}
	}
	// The workspace itself stays writable.
	if err := os.WriteFile(filepath.Join(ws, "f"), []byte("x"), 0o644); err != nil {
		t.Errorf("writing inside the workspace: %v", err)
	}
}

func TestUnsealedRestores(t *testing.T) {
	dir := sealedDir(t)
	err := guard.Unsealed(dir, func() error {
		return os.Mkdir(filepath.Join(dir, "made"), 0o755)
	})
	if err != nil {
		t.Fatalf("Unsealed: %v", err)
	}
	if sealed, err := guard.Sealed(dir); err != nil || !sealed {
		t.Errorf("after Unsealed: sealed=%v err=%v, want sealed", sealed, err)
	}
	want := errors.New("fn failed")
	if err := guard.Unsealed(dir, func() error { return want }); !errors.Is(err, want) {
		t.Errorf("Unsealed returned %v, want fn's error", err)
	}
	if sealed, _ := guard.Sealed(dir); !sealed {
		t.Errorf("not sealed again after fn failed")
	}
	// An unsealed directory stays unsealed.
	plain := t.TempDir()
	if err := guard.Unsealed(plain, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	if sealed, _ := guard.Sealed(plain); sealed {
		t.Errorf("Unsealed sealed a directory that was not")
	}
}

func TestOpenDirRefusesWhatTheHostDidNotMake(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	other := t.TempDir()
	if err := os.Symlink(other, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mknod(filepath.Join(dir, "dev"), syscall.S_IFCHR|0o644, 1<<8|3); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"link", "fifo", "dev", "file", "missing", "../" + filepath.Base(other)} {
		f, err := guard.OpenDir(dir, name)
		if err == nil {
			f.Close()
			t.Errorf("OpenDir(%q) succeeded", name)
			continue
		}
		if !errors.Is(err, guard.ErrTampered) {
			t.Errorf("OpenDir(%q): %v, want ErrTampered", name, err)
		}
	}
}

func TestSameNoticesASwap(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	ws := filepath.Join(dir, "workspace")
	if err := os.Mkdir(ws, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := guard.OpenDir(dir, "workspace")
	if err != nil {
		t.Fatal(err)
	}
	id, err := guard.IDOf(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := guard.Same(dir, "workspace", id); err != nil {
		t.Fatalf("Same on the untouched directory: %v", err)
	}
	if err := os.Rename(ws, filepath.Join(dir, "moved")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(ws, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := guard.Same(dir, "workspace", id); !errors.Is(err, guard.ErrTampered) {
		t.Errorf("Same after a swap: %v, want ErrTampered", err)
	}
}
