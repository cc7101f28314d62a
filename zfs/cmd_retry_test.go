package zfs_test

import (
	"errors"
	"fmt"
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
clone|create)
	for n; do :; done
	: > "$d/$(key "$n")"
	echo "filesystem successfully created, but not mounted" >&2
	echo "cannot mount '$n': mountpoint or dataset is busy" >&2; exit 1 ;;
mount)
	# Busy as many more times as the number in mount-busy says.
	b=$(cat "$d/../mount-busy" 2>/dev/null || echo 0)
	if [ "$b" -gt 0 ]; then echo $((b - 1)) > "$d/../mount-busy"; echo "cannot mount '$2': mountpoint or dataset is busy" >&2; exit 1; fi
	: > "$d/$(key "$2").mounted" ;;
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

// TestCommandDriverMadeButNotMounted: zfs clone and zfs create that make
// the dataset but fail to mount it ("successfully created, but not
// mounted": a busy mount point) are finished by mounting again, with the
// busy retries; if the mount keeps failing the dataset is destroyed, so a
// failed Clone or Create leaves nothing behind.
func TestCommandDriverMadeButNotMounted(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	for _, op := range []string{"clone", "create"} {
		for _, busy := range []int{1, 100} {
			t.Run(fmt.Sprintf("%s/mount-busy-%d", op, busy), func(t *testing.T) {
				prog, ds := fakeZFS(t)
				if err := os.MkdirAll(ds, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(ds, "..", "mount-busy"), []byte(fmt.Sprint(busy)), 0o644); err != nil {
					t.Fatal(err)
				}
				d := zfs.NewCommandDriver(zfs.WithZFSCommand(prog), zfs.WithBusyRetries(3))
				var err error
				if op == "clone" {
					err = d.Clone(t.Context(), "p/v@s", "p/c", zfs.CreateOptions{})
				} else {
					err = d.Create(t.Context(), "p/c", zfs.CreateOptions{})
				}
				exists, xerr := d.Exists(t.Context(), "p/c")
				if xerr != nil {
					t.Fatal(xerr)
				}
				_, merr := os.Stat(filepath.Join(ds, "p_c.mounted"))
				if busy == 1 {
					if err != nil || !exists || merr != nil {
						t.Fatalf("%s whose mount was busy once: err %v, exists %v, mounted %v; want it made and mounted", op, err, exists, merr == nil)
					}
					return
				}
				if !errors.Is(err, zfs.ErrBusy) || exists {
					t.Fatalf("%s whose mount stays busy: err %v, exists %v; want ErrBusy and no dataset left", op, err, exists)
				}
			})
		}
	}
}
