package rootfs

import (
	"os"
	"path/filepath"
	"testing"
)

// TestMakeMountpoints: an image being built gets every mount point, an
// existing one is kept, and entries that are not what they should be (a
// symlink out of the image, a file where a directory goes) are refused
// without anything written through them.
func TestMakeMountpoints(t *testing.T) {
	dir := t.TempDir()
	if err := CheckMountpoints(dir); err == nil {
		t.Fatal("CheckMountpoints of an empty directory: nil, want an error")
	}
	if err := makeMountpoints(dir); err != nil {
		t.Fatal(err)
	}
	if err := makeMountpoints(dir); err != nil {
		t.Fatalf("second makeMountpoints: %v", err)
	}
	if err := CheckMountpoints(dir); err != nil {
		t.Fatal(err)
	}

	outside := t.TempDir()
	for name, plant := range map[string]func(img string) error{
		".turnbox symlink": func(img string) error { return os.Symlink(outside, filepath.Join(img, ".turnbox")) },
		"proc symlink":     func(img string) error { return os.Symlink(outside, filepath.Join(img, "proc")) },
		"agent symlink": func(img string) error {
			if err := os.MkdirAll(filepath.Join(img, ".turnbox"), 0o755); err != nil {
				return err
			}
			return os.Symlink(filepath.Join(outside, "agent"), filepath.Join(img, ".turnbox", "agent"))
		},
		"dev file": func(img string) error { return os.WriteFile(filepath.Join(img, "dev"), nil, 0o644) },
	} {
		img := t.TempDir()
		if err := plant(img); err != nil {
			t.Fatal(err)
		}
		if err := makeMountpoints(img); err == nil {
			t.Errorf("%s: makeMountpoints = nil, want an error", name)
		}
		if err := CheckMountpoints(img); err == nil {
			t.Errorf("%s: CheckMountpoints = nil, want an error", name)
		}
		if ents, _ := os.ReadDir(outside); len(ents) != 0 {
			t.Fatalf("%s: makeMountpoints wrote %d entries through the symlink into %s", name, len(ents), outside)
		}
	}
}
