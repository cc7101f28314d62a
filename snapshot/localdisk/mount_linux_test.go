//go:build linux

package localdisk

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/internal/testenv"
)

// TestMountsUnder: mountsUnder lists the mounts strictly inside a
// directory, by their real names (mountinfo escapes a space as \040), and
// not the directory's own mount or a sibling sharing its name as prefix.
func TestMountsUnder(t *testing.T) {
	testenv.RequireRoot(t)
	base := t.TempDir()
	dir := filepath.Join(base, "vol")
	inside := filepath.Join(dir, "a dir\twith\\odd names")
	sibling := filepath.Join(base, "vol2")
	for _, d := range []string{inside, sibling} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, mp := range []string{dir, inside, sibling} {
		if err := unix.Mount("tmpfs", mp, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Unmount(mp, unix.MNT_DETACH) })
		if mp == dir {
			if err := os.MkdirAll(inside, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := mountsUnder(dir); !slices.Equal(got, []string{inside}) {
		t.Errorf("mountsUnder(%q) = %q, want [%q]", dir, got, inside)
	}
	if got := mountsUnder(inside); len(got) != 0 {
		t.Errorf("mountsUnder(%q) = %q, want none", inside, got)
	}
}
