package embedded_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/turnbox/turnbox/container/rootfs"
	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
)

// TestImageStore: on isolated runtimes an image is a real directory
// directly in ImagesDir, named by name. Paths, names that climb out,
// symlinks planted in the store (to / or to a good image) and plain files
// are refused with ErrInvalidArgument before anything is recorded or
// written: no session, no volume, no mount point in the named directory or
// in the image; a good image is used and left unchanged.
func TestImageStore(t *testing.T) {
	for _, rt := range []embedded.ContainerRuntime{embedded.ContainerRuntimeRunc, embedded.ContainerRuntimeGVisor} {
		t.Run(string(rt), func(t *testing.T) {
			cfg := matrixConfig(t, embedded.StorageBackendLocalDisk, rt)
			h := openCheckedHost(t, cfg)
			store := filepath.Join(cfg.StateDir, "images")
			good := filepath.Join(store, embedded.DefaultImage)
			decoy := t.TempDir()
			plant := map[string]func(string) error{
				"to-root":   func(p string) error { return os.Symlink("/", p) },
				"to-decoy":  func(p string) error { return os.Symlink(decoy, p) },
				"to-good":   func(p string) error { return os.Symlink(embedded.DefaultImage, p) },
				"plainfile": func(p string) error { return os.WriteFile(p, nil, 0o644) },
			}
			for name, fn := range plant {
				if err := fn(filepath.Join(store, name)); err != nil {
					t.Fatal(err)
				}
			}
			before := treeOf(t, good)
			rootHad := exists("/.turnbox")
			images := []string{"/", "/etc", decoy, "../images/busybox", "busybox/.", "missing", "to-root", "to-decoy", "to-good", "plainfile"}
			for _, img := range images {
				_, err := h.CreateSession(t.Context(), environment.SessionConfig{SessionID: "img-test", Image: img})
				if !errors.Is(err, environment.ErrInvalidArgument) {
					t.Errorf("CreateSession(Image %q): err = %v, want ErrInvalidArgument", img, err)
				}
				if _, err := h.ImagePath(img); !errors.Is(err, environment.ErrInvalidArgument) {
					t.Errorf("ImagePath(%q): err = %v, want ErrInvalidArgument", img, err)
				}
			}
			if ss := h.Sessions(); len(ss) != 0 {
				t.Errorf("refused creates left sessions: %+v", ss)
			}
			if vols, err := sessionVolumes(t.Context(), h); err != nil || len(vols) != 0 {
				t.Errorf("refused creates left volumes: %v %v", vols, err)
			}
			if exists(filepath.Join(decoy, ".turnbox")) || (!rootHad && exists("/.turnbox")) {
				t.Errorf("a refused create made mount points on the host")
			}
			// The good image works and is not written to.
			env, err := h.CreateSession(t.Context(), environment.SessionConfig{SessionID: "img-good", Image: embedded.DefaultImage})
			if err != nil {
				t.Fatal(err)
			}
			defer env.Destroy(context.WithoutCancel(t.Context()))
			req, _ := environment.NewToolRequest("c1", environment.BashParams{Command: "echo hi > /tmp/x && echo ok"})
			if resp, err := env.ExecuteTool(t.Context(), req, nil); err != nil || resp.IsError || strings.TrimSpace(resp.Content) != "ok" {
				t.Fatalf("bash on the good image: %+v %v", resp, err)
			}
			after := treeOf(t, good)
			for p, was := range before {
				if now, ok := after[p]; !ok || now != was {
					t.Errorf("starting a sandbox changed %s in the image: %q -> %q", p, was, now)
				}
			}
			for p, now := range after {
				if _, ok := before[p]; !ok {
					t.Errorf("starting a sandbox created %s in the image (%s)", p, now)
				}
			}
		})
	}
}

// TestDefaultImageUpgraded: a default image built before images carried
// the runtimes' mount points gets them when a host opens, once, so that no
// sandbox start has to write into it.
func TestDefaultImageUpgraded(t *testing.T) {
	cfg := matrixConfig(t, embedded.StorageBackendLocalDisk, embedded.ContainerRuntimeRunc)
	img := filepath.Join(cfg.StateDir, "images", embedded.DefaultImage)
	if err := rootfs.BuildBusybox(img); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(img, ".turnbox")); err != nil {
		t.Fatal(err)
	}
	openCheckedHost(t, cfg)
	if err := rootfs.CheckMountpoints(img); err != nil {
		t.Fatalf("after NewHost: %v", err)
	}
}

// TestDefaultImageByName: Config.DefaultImage is a name too; a path is
// refused before the host writes anything (not even its state directory).
func TestDefaultImageByName(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	for _, img := range []string{"/", "/etc", "../x", "a/b"} {
		_, err := embedded.NewHost(t.Context(), embedded.Config{StateDir: state, DefaultImage: img, ContainerRuntime: embedded.ContainerRuntimeNone})
		if !errors.Is(err, environment.ErrInvalidArgument) {
			t.Errorf("NewHost with DefaultImage %q: err = %v, want ErrInvalidArgument", img, err)
		}
	}
	if exists(state) {
		t.Errorf("a refused NewHost created its state directory")
	}
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// treeOf maps every entry under dir to its mode and modification time, to
// compare before and after.
func treeOf(t *testing.T, dir string) map[string]string {
	t.Helper()
	tree := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		tree[rel] = fi.Mode().String() + " " + fi.ModTime().String()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return tree
}
