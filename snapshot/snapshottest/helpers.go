package snapshottest

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/turnbox/turnbox/snapshot"
)

func mustCreate(t *testing.T, b snapshot.Backend, name string) snapshot.Volume {
	t.Helper()
	v, err := b.CreateVolume(t.Context(), name)
	if err != nil {
		t.Fatalf("CreateVolume(%q): %v", name, err)
	}
	return v
}

func mustSnapshot(t *testing.T, b snapshot.Backend, volume, name string) snapshot.Snapshot {
	t.Helper()
	s, err := b.Snapshot(t.Context(), volume, name)
	if err != nil {
		t.Fatalf("Snapshot(%q, %q): %v", volume, name, err)
	}
	return s
}

func mustRollback(t *testing.T, b snapshot.Backend, volume, name string) {
	t.Helper()
	if err := b.Rollback(t.Context(), volume, name); err != nil {
		t.Fatalf("Rollback(%q, %q): %v", volume, name, err)
	}
}

func mustClone(t *testing.T, b snapshot.Backend, volume, srcVolume, srcSnapshot string) snapshot.Volume {
	t.Helper()
	v, err := b.CloneVolume(t.Context(), volume, srcVolume, srcSnapshot)
	if err != nil {
		t.Fatalf("CloneVolume(%q, %q, %q): %v", volume, srcVolume, srcSnapshot, err)
	}
	return v
}

func mustVolume(t *testing.T, b snapshot.Backend, name string) snapshot.Volume {
	t.Helper()
	v, err := b.Volume(t.Context(), name)
	if err != nil {
		t.Fatalf("Volume(%q): %v", name, err)
	}
	return v
}

// wantErr fails unless errors.Is(err, target).
func wantErr(t *testing.T, err, target error, what string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: got error %v, want one wrapping %q", what, err, target)
	}
}

func volumeNames(t *testing.T, b snapshot.Backend) []string {
	t.Helper()
	vs, err := b.Volumes(t.Context())
	if err != nil {
		t.Fatalf("Volumes: %v", err)
	}
	names := []string{}
	for _, v := range vs {
		names = append(names, v.Name)
	}
	return names
}

func snapshotNames(t *testing.T, b snapshot.Backend, volume string) []string {
	t.Helper()
	ss, err := b.Snapshots(t.Context(), volume)
	if err != nil {
		t.Fatalf("Snapshots(%q): %v", volume, err)
	}
	names := []string{}
	for _, s := range ss {
		names = append(names, s.Name)
	}
	return names
}

func wantVolumes(t *testing.T, b snapshot.Backend, want ...string) {
	t.Helper()
	if want == nil {
		want = []string{}
	}
	if got := volumeNames(t, b); !slices.Equal(got, want) {
		t.Errorf("Volumes = %q, want %q", got, want)
	}
}

func wantSnapshots(t *testing.T, b snapshot.Backend, volume string, want ...string) {
	t.Helper()
	if want == nil {
		want = []string{}
	}
	if got := snapshotNames(t, b, volume); !slices.Equal(got, want) {
		t.Errorf("Snapshots(%q) = %q, want %q (oldest first)", volume, got, want)
	}
}

// wantTree fails unless the tree at dir has manifest want (from Manifest
// with the same withModTimes).
func wantTree(t *testing.T, dir string, want []string, withModTimes bool, what string) {
	t.Helper()
	got := Manifest(t, dir, withModTimes)
	if !slices.Equal(got, want) {
		t.Errorf("%s: tree at %s differs from the expected one:\n%s", what, dir, diffLines(want, got, 40))
	}
}

func wantHash(t *testing.T, dir, want, what string) {
	t.Helper()
	if got := TreeHash(t, dir); got != want {
		t.Errorf("%s: TreeHash(%s) = %s, want %s", what, dir, got, want)
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// overwriteInPlace rewrites the start of an existing file without
// truncating or replacing it, the change a shared inode or extent would
// leak.
func overwriteInPlace(t *testing.T, path, data string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte(data), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// mutate changes a StandardTree in every way a rollback must undo.
func mutate(t *testing.T, dir string) {
	t.Helper()
	p := func(s string) string { return filepath.Join(dir, filepath.FromSlash(s)) }
	overwriteInPlace(t, p("README.md"), "# CHANGED")
	overwriteInPlace(t, p("hard/a"), "CHANGED")
	for _, r := range []string{"data/big.bin", "link-rel", "data/empty-dir", "pipe", "hard/b"} {
		if err := os.RemoveAll(p(r)); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, p("new/file.txt"), "new\n")
	writeFile(t, p("hard/b"), "no longer a link\n")
	if err := os.Symlink("bin", p("link-rel")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(p("pipe"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p("bin/tool.sh"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p("."), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p("dated"), time.Now(), time.Now()); err != nil {
		t.Fatal(err)
	}
}

// wantOnlyChild fails unless the parent directory of v.Path holds nothing
// but v.Path (the contract: the parent belongs to the volume alone).
func wantOnlyChild(t *testing.T, v snapshot.Volume) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Dir(v.Path))
	if err != nil {
		t.Fatalf("reading the parent of volume %q's Path: %v", v.Name, err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{filepath.Base(v.Path)}) {
		t.Errorf("parent directory of volume %q's Path %s holds %q, want only %q", v.Name, v.Path, names, filepath.Base(v.Path))
	}
}

func closeEnough(a, b time.Time) bool {
	d := a.Sub(b)
	return d > -time.Second && d < time.Second
}
