package embedded_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/turnbox/turnbox/container/rootfs"
	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/internal/regtest"
)

// imageNames returns the names of the host's images.
func imageNames(t *testing.T, h *embedded.Host) []string {
	t.Helper()
	all, err := h.Images(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range all {
		names = append(names, m.Name)
	}
	return names
}

// hiddenEntries lists what the images directory holds besides images,
// records and the trash: temporaries a failed pull would leave.
func hiddenEntries(t *testing.T, dir string) []string {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		if n := e.Name(); strings.HasPrefix(n, ".") && n != rootfs.MetaDir && n != ".trash" {
			out = append(out, n)
		}
	}
	return out
}

// PullImage records the image; Images and Image report it; a second pull
// of the name is ErrAlreadyExists unless Replace; bad references and a
// cancelled pull change nothing; RemoveImage removes the directory and
// the record, and then the image is not found.
func TestImagePullGetRemove(t *testing.T) {
	reg := regtest.Start(t)
	ref := reg + "/org/tool:1"
	d1 := regtest.Push(t, ref, regtest.Random(t, 4096, 2))
	h := newHost(t, embedded.Config{})
	ctx := context.Background()
	imagesDir := h.ImageStore().Dir

	var calls int
	m, err := h.PullImage(ctx, ref, embedded.PullImageOptions{Insecure: true, Progress: func(done, total int64) { calls++ }})
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "tool" || m.Digest != d1 || m.Source != "pull:"+ref || m.SizeBytes <= 0 || calls == 0 {
		t.Fatalf("pulled %+v (progress calls %d)", m, calls)
	}
	if got, err := h.Image(ctx, "tool"); err != nil || got.Digest != d1 {
		t.Fatalf("Image: %+v, %v", got, err)
	}
	if names := imageNames(t, h); !slices.Contains(names, "tool") || !slices.IsSorted(names) {
		t.Fatalf("Images: %v", names)
	}
	if _, err := h.PullImage(ctx, ref, embedded.PullImageOptions{Insecure: true}); !errors.Is(err, environment.ErrAlreadyExists) {
		t.Fatalf("second pull: %v, want ErrAlreadyExists", err)
	}

	for _, bad := range []struct{ ref, name string }{
		{"example.com/x:1", ""},                 // http off loopback
		{reg + "/org/tool:1", "../escape"},      // bad name
		{strings.Repeat("a", 2000) + ":1", "x"}, // too long
		{"UPPER/Case::", "x"},                   // malformed
	} {
		_, err := h.PullImage(ctx, bad.ref, embedded.PullImageOptions{Name: bad.name, Insecure: true})
		if !errors.Is(err, environment.ErrInvalidArgument) {
			t.Errorf("pull %q as %q: %v, want ErrInvalidArgument", bad.ref[:min(40, len(bad.ref))], bad.name, err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := h.PullImage(cctx, ref, embedded.PullImageOptions{Name: "cancelled", Insecure: true}); err == nil {
		t.Fatal("a cancelled pull succeeded")
	}
	if names := imageNames(t, h); slices.Contains(names, "cancelled") {
		t.Fatalf("a cancelled pull left an image: %v", names)
	}
	if left := hiddenEntries(t, imagesDir); len(left) > 0 {
		t.Fatalf("failed pulls left %v", left)
	}

	d2 := regtest.Push(t, ref, regtest.Random(t, 4096, 2))
	if m, err := h.PullImage(ctx, ref, embedded.PullImageOptions{Insecure: true, Replace: true}); err != nil || m.Digest != d2 {
		t.Fatalf("replacing pull: %+v, %v", m, err)
	}
	if trash, _ := os.ReadDir(filepath.Join(imagesDir, ".trash")); len(trash) != 1 {
		t.Fatalf("the replaced directory is not in the trash: %v", trash)
	}

	if _, err := h.RemoveImage(ctx, "tool"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(imagesDir, "tool")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("image directory after RemoveImage: %v", err)
	}
	if _, err := rootfs.ReadMeta(imagesDir, "tool"); err == nil {
		t.Fatal("record left after RemoveImage")
	}
	if _, err := h.Image(ctx, "tool"); !errors.Is(err, environment.ErrImageNotFound) {
		t.Fatalf("Image after remove: %v, want ErrImageNotFound", err)
	}
	if _, err := h.RemoveImage(ctx, "tool"); !errors.Is(err, environment.ErrImageNotFound) {
		t.Fatalf("second RemoveImage: %v, want ErrImageNotFound", err)
	}
	rep, err := h.PruneImages(ctx)
	if err != nil || len(rep.Removed) != 1 || !strings.HasPrefix(rep.Removed[0], ".trash/tool.") || rep.FreedBytes <= 0 {
		t.Fatalf("prune: %+v, %v; want the replaced directory freed", rep, err)
	}
	if left, _ := os.ReadDir(filepath.Join(imagesDir, ".trash")); len(left) != 0 {
		t.Fatalf("trash after prune: %v", left)
	}
}

// An image of the host's busybox, in a loopback registry, that sessions
// of an isolated runtime can run; extra adds a file layer (a new
// version of the image).
func pushBusybox(t *testing.T, ref string, extra map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "bb")
	if err := rootfs.BuildBusybox(dir); err != nil {
		t.Skipf("no static busybox: %v", err)
	}
	return regtest.Push(t, ref, regtest.FromDir(t, dir, runtime.GOARCH, extra))
}

// imageVolumes returns the names of the storage's image base volumes of
// image name.
func imageVolumes(t *testing.T, h *embedded.Host, name string) []string {
	t.Helper()
	vols, err := h.Storage().Volumes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, v := range vols {
		if strings.HasPrefix(v.Name, "image."+name+".") {
			out = append(out, v.Name)
		}
	}
	slices.Sort(out)
	return out
}

// RemoveImage is refused while a session uses the image, naming it; a
// replaced image's base volume is freed by PruneImages once no session
// needs it (at once where clones are independent, after the session is
// destroyed on zfs), and a create racing prune never loses its source.
func TestImageRemoveInUseAndPrune(t *testing.T) {
	for _, st := range []embedded.StorageBackend{embedded.StorageBackendLocalDisk, embedded.StorageBackendBtrfs, embedded.StorageBackendZFS} {
		t.Run(string(st), func(t *testing.T) {
			cfg := matrixConfig(t, st, embedded.ContainerRuntimeRunc)
			ref := regtest.Start(t) + "/org/bb:1"
			pushBusybox(t, ref, nil)
			h := openCheckedHost(t, cfg)
			ctx := context.Background()
			if _, err := h.PullImage(ctx, ref, embedded.PullImageOptions{Insecure: true}); err != nil {
				t.Fatal(err)
			}
			e, err := h.CreateSession(ctx, environment.SessionConfig{Image: "bb"})
			if err != nil {
				t.Fatal(err)
			}
			_, err = h.RemoveImage(ctx, "bb")
			if !errors.Is(err, environment.ErrImageInUse) || !strings.Contains(err.Error(), e.SessionID()) {
				t.Fatalf("RemoveImage of a used image: %v; want ErrImageInUse naming %s", err, e.SessionID())
			}
			if _, err := h.Image(ctx, "bb"); err != nil {
				t.Fatalf("refused RemoveImage changed the image: %v", err)
			}
			pruneReplaced(t, h, ref, e, st == embedded.StorageBackendZFS)
		})
	}
}

// pruneReplaced replaces image bb (from ref), which session e uses, and
// checks what prune frees: the old base volume at once unless clones
// depend on it, else once the sessions are gone; then bb's own after it
// is removed.
func pruneReplaced(t *testing.T, h *embedded.Host, ref string, e *embedded.Environment, dependent bool) {
	ctx := context.Background()
	old := imageVolumes(t, h, "bb")
	if len(old) != 1 {
		t.Fatalf("base volumes of bb: %v", old)
	}
	pushBusybox(t, ref, map[string]string{"etc/version": "2"})
	if _, err := h.PullImage(ctx, ref, embedded.PullImageOptions{Insecure: true, Replace: true}); err != nil {
		t.Fatal(err)
	}
	e2, err := h.CreateSession(ctx, environment.SessionConfig{Image: "bb"})
	if err != nil {
		t.Fatal(err)
	}
	if now := imageVolumes(t, h, "bb"); len(now) != 2 {
		t.Fatalf("after replace, base volumes of bb: %v (want the old and a new one)", now)
	}
	rep, err := h.PruneImages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if freed := slices.Contains(rep.Removed, old[0]); freed == dependent {
		t.Fatalf("prune with a session of the old image: %+v (old volume %s; clones dependent: %v)", rep, old[0], dependent)
	}
	t.Logf("prune with sessions: %+v", rep)
	// The old session still runs on its own copy, the new one sees the
	// new image.
	if r := call(t, e2, environment.BashParams{Command: "cat /etc/version"}); strings.TrimSpace(r.Content) != "2" {
		t.Fatalf("new session of the replaced image: %q", r.Content)
	}
	call(t, e, environment.BashParams{Command: "true"})
	for _, s := range []*embedded.Environment{e, e2} {
		if err := s.Destroy(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if rep, err = h.PruneImages(ctx); err != nil {
		t.Fatal(err)
	}
	if got := imageVolumes(t, h, "bb"); len(got) != 1 || got[0] == old[0] {
		t.Fatalf("after the sessions are gone and prune (%+v), base volumes of bb: %v", rep, got)
	}
	if trash, _ := os.ReadDir(filepath.Join(h.ImageStore().Dir, ".trash")); len(trash) != 0 {
		t.Fatalf("prune kept the replaced directory with no session left: %v", trash)
	}
	if _, err := h.RemoveImage(ctx, "bb"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.PruneImages(ctx); err != nil {
		t.Fatal(err)
	}
	if got := imageVolumes(t, h, "bb"); len(got) != 0 {
		t.Fatalf("after rm and prune, base volumes of bb: %v", got)
	}
}

// A prune that comes while a create has found its image's base volume
// but not cloned it yet (the image replaced meanwhile, so the volume is
// stale) waits for the clone: the create never loses its source.
func TestImagePruneWaitsForCreate(t *testing.T) {
	cfg := matrixConfig(t, embedded.StorageBackendLocalDisk, embedded.ContainerRuntimeRunc)
	ref := regtest.Start(t) + "/org/bb:1"
	pushBusybox(t, ref, nil)
	h := openCheckedHost(t, cfg)
	ctx := context.Background()
	if _, err := h.PullImage(ctx, ref, embedded.PullImageOptions{Insecure: true}); err != nil {
		t.Fatal(err)
	}
	found, release := make(chan struct{}), make(chan struct{})
	defer embedded.SetAfterImageBase(func() {
		close(found)
		<-release
	})()
	created := make(chan error, 1)
	go func() {
		e, err := h.CreateSession(ctx, environment.SessionConfig{Image: "bb"})
		if err == nil {
			err = e.Destroy(ctx)
		}
		created <- err
	}()
	<-found
	pushBusybox(t, ref, map[string]string{"etc/version": "2"})
	if _, err := h.PullImage(ctx, ref, embedded.PullImageOptions{Insecure: true, Replace: true}); err != nil {
		t.Fatal(err)
	}
	pruned := make(chan error, 1)
	go func() {
		_, err := h.PruneImages(ctx)
		pruned <- err
	}()
	select {
	case err := <-pruned:
		t.Fatalf("prune finished (%v) while a create was about to clone the volume it frees", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	if err := <-created; err != nil {
		t.Fatalf("create racing prune: %v", err)
	}
	if err := <-pruned; err != nil {
		t.Fatal(err)
	}
	if got := imageVolumes(t, h, "bb"); len(got) != 0 {
		t.Fatalf("after the create and prune, base volumes of bb: %v (the stale one should be freed)", got)
	}
}
