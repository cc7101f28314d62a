package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/turnbox/turnbox/embedded/ledger"
)

// image rm refuses an image a session uses, naming the session, and
// removes it once none does; image build of an existing name says to
// image rm it.
func TestImageRm(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "images", "mybox")
	if err := os.MkdirAll(filepath.Join(img, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	lg, err := ledger.Open(filepath.Join(dir, "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []ledger.SessionRecord{
		{ID: "uses-it", Volume: "uses-it", Runtime: "runc", State: "active", Config: []byte(`{"image":"mybox"}`), CreatedAt: time.Now()},
		{ID: "default-img", Volume: "default-img", Runtime: "gvisor", State: "active", Config: []byte(`{}`), CreatedAt: time.Now()},
		{ID: "on-none", Volume: "on-none", Runtime: "none", State: "active", Config: []byte(`{"image":"mybox"}`), CreatedAt: time.Now()},
	} {
		if err := lg.PutSession(r); err != nil {
			t.Fatal(err)
		}
	}
	lg.Close()

	stderr, err := runTurnbox(t, dir, "image", "build", "busybox", "mybox")
	if err == nil || !strings.Contains(stderr, "turnbox image rm mybox") {
		t.Fatalf("image build of an existing name: %v, %q; want an error saying to image rm it", err, stderr)
	}
	stderr, err = runTurnbox(t, dir, "image", "rm", "mybox")
	if err == nil || !strings.Contains(stderr, "uses-it") || strings.Contains(stderr, "default-img") || strings.Contains(stderr, "on-none") {
		t.Fatalf("image rm of a used image: %v, %q; want refused naming uses-it only", err, stderr)
	}
	if _, err := os.Stat(filepath.Join(img, "bin")); err != nil {
		t.Fatalf("refused image rm changed the image: %v", err)
	}
	if stderr, err := runTurnbox(t, dir, "image", "rm", "--image", "mybox", "mybox"); err == nil || !strings.Contains(stderr, "default-img") {
		t.Fatalf("image rm of the default image: %v, %q; want refused naming default-img", err, stderr)
	}

	lg, err = ledger.Open(filepath.Join(dir, "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := lg.DeleteSession("uses-it"); err != nil {
		t.Fatal(err)
	}
	lg.Close()
	if stderr, err := runTurnbox(t, dir, "image", "rm", "mybox"); err != nil {
		t.Fatalf("image rm of an unused image: %v: %s", err, stderr)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "images")); len(ents) != 0 {
		t.Fatalf("images left after image rm: %v", ents)
	}
	if stderr, err := runTurnbox(t, dir, "image", "rm", "mybox"); err == nil || !strings.Contains(stderr, "not found") {
		t.Fatalf("image rm of a missing image: %v, %q", err, stderr)
	}
	if stderr, err := runTurnbox(t, dir, "image", "rm", "../x"); err == nil || !strings.Contains(stderr, "image name") {
		t.Fatalf("image rm ../x: %v, %q", err, stderr)
	}
}
