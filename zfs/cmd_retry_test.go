package zfs_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/turnbox/turnbox/zfs"
)

// fakeZFS writes a zfs program that keeps its datasets as files in dir and
// whose rename and destroy do their job and then, the first time only,
// fail with "busy", as zfs-fuse does now and then when the unmount or
// remount around a change fails after the change went through.
func fakeZFS(t *testing.T) (prog, dir string) {
	t.Helper()
	dir = t.TempDir()
	prog = filepath.Join(dir, "zfs")
	script := `#!/bin/sh
d=` + dir + `/ds
mkdir -p "$d"
key() { echo "$1" | tr "/" "_"; }
case "$1" in
get)
	for n; do :; done
	if [ -e "$d/$(key "$n")" ]; then printf '%s\ttype\tfilesystem\n' "$n"; exit 0; fi
	echo "cannot open '$n': dataset does not exist" >&2; exit 1 ;;
rename)
	if [ ! -e "$d/$(key "$2")" ]; then echo "cannot open '$2': dataset does not exist" >&2; exit 1; fi
	mv "$d/$(key "$2")" "$d/$(key "$3")"
	if [ ! -e "$d/.said-busy" ]; then : > "$d/.said-busy"; echo "cannot unmount '/x': Device or resource busy" >&2; exit 1; fi ;;
destroy)
	for n; do :; done
	if [ ! -e "$d/$(key "$n")" ]; then echo "cannot open '$n': dataset does not exist" >&2; exit 1; fi
	rm "$d/$(key "$n")"
	if [ ! -e "$d/.said-busy" ]; then : > "$d/.said-busy"; echo "cannot unmount '/x': Device or resource busy" >&2; exit 1; fi ;;
esac
`
	if err := os.WriteFile(prog, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return prog, dir + "/ds"
}

func TestCommandDriverChangeThatSaidBusy(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	for _, op := range []string{"rename", "destroy"} {
		t.Run(op, func(t *testing.T) {
			prog, ds := fakeZFS(t)
			if err := os.MkdirAll(ds, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(ds, "p_v@s"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			d := zfs.NewCommandDriver(zfs.WithZFSCommand(prog))
			var err error
			if op == "rename" {
				err = d.Rename(t.Context(), "p/v@s", "p/v@t")
			} else {
				err = d.Destroy(t.Context(), "p/v@s", zfs.DestroyOptions{})
			}
			if err != nil {
				t.Fatalf("%s that went through but said busy: %v, want nil", op, err)
			}
			if ok, err := d.Exists(t.Context(), "p/v@s"); err != nil || ok {
				t.Fatalf("source after %s: exists %v, %v", op, ok, err)
			}
			// A change whose source never existed still fails as not found.
			if op == "rename" {
				err = d.Rename(t.Context(), "p/v@nope", "p/v@u")
			} else {
				err = d.Destroy(t.Context(), "p/v@nope", zfs.DestroyOptions{})
			}
			if !errors.Is(err, zfs.ErrNotFound) {
				t.Fatalf("%s of a missing snapshot: %v, want ErrNotFound", op, err)
			}
		})
	}
}
