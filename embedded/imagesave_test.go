package embedded_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/turnbox/turnbox/container/rootfs"
	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
)

// A session's snapshot saved as an image starts new sessions with the
// snapshot's whole root, outlives the session, survives a host restart,
// and bad saves change nothing.
func TestSaveImage(t *testing.T) {
	for _, storage := range []embedded.StorageBackend{embedded.StorageBackendLocalDisk, embedded.StorageBackendBtrfs, embedded.StorageBackendZFS} {
		t.Run(string(storage), func(t *testing.T) {
			cfg := matrixConfig(t, storage, embedded.ContainerRuntimeRunc)
			h := newHost(t, cfg)
			ctx := context.Background()
			src, err := h.CreateSession(ctx, environment.SessionConfig{Env: map[string]string{"SAVED": "yes"}})
			if err != nil {
				t.Fatal(err)
			}
			bash(t, src, "echo one > /etc/marker && echo ws > /workspace/w")
			snap, err := src.TurnComplete(ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			bash(t, src, "echo two > /etc/marker2")
			saved, err := h.SaveImage(ctx, src.SessionID(), "saved", embedded.SaveImageOptions{Snapshot: snap.ID})
			if err != nil {
				t.Fatal(err)
			}
			if saved.Source != "snapshot:"+snap.ID || saved.Volume == "" || saved.Parent != embedded.DefaultImage || !slices.Contains(saved.Config.Env, "SAVED=yes") {
				t.Fatalf("saved image record: %+v", saved)
			}
			now, err := h.SaveImage(ctx, src.SessionID(), "now", embedded.SaveImageOptions{})
			if err != nil {
				t.Fatal(err)
			}
			checkSaveErrors(t, h, src.SessionID(), snap.ID)

			// The session goes; its images stay.
			if err := src.Destroy(ctx); err != nil {
				t.Fatal(err)
			}
			a := createFrom(t, h, "saved")
			if out := bash(t, a, "cat /etc/marker /workspace/w; ls /etc/marker2 2>&1 || true"); !strings.HasPrefix(out, "one\nws\n") || !strings.Contains(out, "No such file") {
				t.Fatalf("session from the saved snapshot sees %q", out)
			}
			b := createFrom(t, h, "now")
			if out := bash(t, b, "cat /etc/marker2"); out != "two\n" {
				t.Fatalf("session from the image saved now sees %q", out)
			}
			// Sessions from one image are independent of each other.
			bash(t, b, "echo changed > /etc/marker")
			if out := bash(t, createFrom(t, h, "now"), "cat /etc/marker"); out != "one\n" {
				t.Fatalf("a session's write shows in the next session from its image: %q", out)
			}
			// Replacing keeps the sessions made from the old image.
			if _, err := h.SaveImage(ctx, b.SessionID(), "now", embedded.SaveImageOptions{Replace: true}); err != nil {
				t.Fatal(err)
			}
			if out := bash(t, createFrom(t, h, "now"), "cat /etc/marker"); out != "changed\n" {
				t.Fatalf("the replaced image gives %q", out)
			}
			if out := bash(t, a, "cat /etc/marker"); out != "one\n" {
				t.Fatalf("a session from the first save sees %q", out)
			}
			if _, err := os.Lstat(filepath.Join(cfg.StateDir, "images", "now")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a saved image got a directory in the store: %v", err)
			}
			if m, err := rootfs.ReadMeta(filepath.Join(cfg.StateDir, "images"), "now"); err != nil || m.Volume == now.Volume {
				t.Fatalf("the replaced record: %+v %v", m, err)
			}
			// A host opened again on the state directory keeps the images.
			if err := h.Close(ctx); err != nil {
				t.Fatal(err)
			}
			h2 := newHost(t, cfg)
			c := createFrom(t, h2, "saved")
			if out := bash(t, c, "cat /etc/marker"); out != "one\n" {
				t.Fatalf("after a restart, the saved image gives %q", out)
			}
			checkSavedListedAndRemoved(t, h2, c)
		})
	}
}

// createFrom creates a session from image and destroys it when the test
// ends.
func createFrom(t *testing.T, h *embedded.Host, image string) *embedded.Environment {
	t.Helper()
	e, err := h.CreateSession(context.Background(), environment.SessionConfig{Image: image})
	if err != nil {
		t.Fatalf("a session from image %q: %v", image, err)
	}
	t.Cleanup(func() { _ = e.Destroy(context.Background()) })
	return e
}

// checkSaveErrors checks that bad saves fail with their sentinel and make
// no image.
func checkSaveErrors(t *testing.T, h *embedded.Host, id, snapID string) {
	t.Helper()
	ctx := context.Background()
	for _, c := range []struct {
		id, name string
		opts     embedded.SaveImageOptions
		want     error
	}{
		{id, "saved", embedded.SaveImageOptions{}, environment.ErrAlreadyExists},
		{id, embedded.DefaultImage, embedded.SaveImageOptions{Replace: true}, environment.ErrAlreadyExists},
		{id, "../x", embedded.SaveImageOptions{}, environment.ErrInvalidArgument},
		{id, ".meta", embedded.SaveImageOptions{}, environment.ErrInvalidArgument},
		{"nosuch", "x1", embedded.SaveImageOptions{}, environment.ErrSessionNotFound},
		{id, "x2", embedded.SaveImageOptions{Snapshot: "other@1"}, environment.ErrSnapshotNotFound},
		{id, "x3", embedded.SaveImageOptions{Snapshot: snapID + "9"}, environment.ErrSnapshotNotFound},
	} {
		if _, err := h.SaveImage(ctx, c.id, c.name, c.opts); !errors.Is(err, c.want) {
			t.Errorf("SaveImage(%q, %q, %+v): %v, want %v", c.id, c.name, c.opts, err, c.want)
		}
	}
	for _, name := range []string{"x1", "x2", "x3"} {
		if _, err := h.CreateSession(ctx, environment.SessionConfig{Image: name}); !errors.Is(err, environment.ErrInvalidArgument) {
			t.Errorf("a failed save left image %q: %v", name, err)
		}
	}
}

// checkSavedListedAndRemoved: the saved images are listed with their
// source; "saved" cannot be removed while c (made from it) exists, and
// is gone with its volume afterwards.
func checkSavedListedAndRemoved(t *testing.T, h *embedded.Host, c *embedded.Environment) {
	t.Helper()
	ctx := context.Background()
	list, err := h.Images(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var saved embedded.ImageInfo
	for _, m := range list {
		if m.Name == "saved" {
			saved = m
		}
	}
	if !strings.HasPrefix(saved.Source, "snapshot:") || saved.Volume == "" {
		t.Fatalf("Images lists the saved image as %+v", saved)
	}
	if _, err := h.RemoveImage(ctx, "saved"); !errors.Is(err, environment.ErrImageInUse) || !strings.Contains(err.Error(), c.SessionID()) {
		t.Fatalf("removing an image a session uses: %v", err)
	}
	for _, info := range h.Sessions() {
		if info.Image == "saved" {
			e := h.NewEnvironment()
			if err := e.AttachSession(info.ID); err != nil {
				t.Fatal(err)
			}
			if err := e.Destroy(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := h.RemoveImage(ctx, "saved"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Image(ctx, "saved"); !errors.Is(err, environment.ErrImageNotFound) {
		t.Fatalf("a removed saved image: %v", err)
	}
	if _, err := h.CreateSession(ctx, environment.SessionConfig{Image: "saved"}); err == nil {
		t.Fatal("a session from a removed image was created")
	}
}
