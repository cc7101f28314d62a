package envtest

import (
	"os"
	"strings"
	"testing"

	"github.com/turnbox/turnbox/environment"
)

// testFilesOwner: UploadOptions.Owner owns the uploaded file (as Stat and
// the sandbox's own stat see it), and an environment that implements
// environment.OwnerChanger changes an entry's owner without following a
// final symlink, refusing paths out of the sandbox like every file call.
// Changing owners needs a host that writes as root.
func (s *suite) testFilesOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("changing a file's owner needs root")
	}
	env, fsys := s.fileSession(t)
	ctx, cancel := s.ctx(t)
	defer cancel()
	owner := environment.FileOwner{UID: 1234, GID: 2345}
	fi, err := fsys.Upload(ctx, "owned/f.txt", strings.NewReader("mine"), environment.UploadOptions{Mode: 0o640, Owner: &owner})
	if err != nil {
		t.Fatalf("Upload with Owner: %v", err)
	}
	if fi.UID != owner.UID || fi.GID != owner.GID || fi.Mode != 0o640 {
		t.Errorf("Upload with Owner %+v returned %+v", owner, fi)
	}
	if got := strings.TrimSpace(s.sh(t, env, "stat -c '%u:%g %a' owned/f.txt")); got != "1234:2345 640" {
		t.Errorf("the sandbox sees the uploaded file as %q, want 1234:2345 640", got)
	}
	oc, ok := fsys.(environment.OwnerChanger)
	if !ok {
		return
	}
	s.sh(t, env, "ln -s f.txt owned/link")
	if err := oc.Chown(ctx, "owned", owner); err != nil {
		t.Fatalf("Chown(owned): %v", err)
	}
	if err := oc.Chown(ctx, "owned/link", environment.FileOwner{UID: 7, GID: 8}); err != nil {
		t.Fatalf("Chown(owned/link): %v", err)
	}
	got := strings.Fields(s.sh(t, env, "stat -c '%u:%g' owned owned/link owned/f.txt"))
	if strings.Join(got, " ") != "1234:2345 7:8 1234:2345" {
		t.Errorf("after Chown the sandbox sees owned, owned/link, owned/f.txt as %v, want 1234:2345 7:8 1234:2345 (the link's target unchanged)", got)
	}
	err = oc.Chown(ctx, "missing", owner)
	wantErr(t, "Chown(missing)", err, environment.ErrFileNotFound)
	s.sh(t, env, "ln -s ../../../../.. up")
	err = oc.Chown(ctx, "up/etc/passwd", owner)
	wantErr(t, "Chown(up/etc/passwd)", err, environment.ErrPathEscapes, environment.ErrFileNotFound)
}
