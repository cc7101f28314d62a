package envtest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	mrand "math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/turnbox/turnbox/environment"
)

// fileTests cover environment.FileSystem, on environments whose
// Capabilities report Files.
func (s *suite) fileTests() []test {
	return []test{
		{"BinaryRoundTrip", s.testFilesRoundTrip},
		{"Stat", s.testFilesStat},
		{"MkdirMoveRemove", s.testFilesMkdirMoveRemove},
		{"ListDir", s.testFilesListDir},
		{"Escapes", s.testFilesEscapes},
		{"Race", s.testFilesRace},
		{"Watch", s.testFilesWatch},
		{"WatchEndsOnRollback", s.testFilesWatchRollback},
		{"UploadDiskLimit", s.testFilesDiskLimit},
		{"Owner", s.testFilesOwner},
	}
}

// fileSession creates a session and returns its FileSystem, skipping
// when the environment does not report Files (and failing when it
// reports it without implementing it).
func (s *suite) fileSession(t *testing.T, mods ...func(*environment.SessionConfig)) (environment.Environment, environment.FileSystem) {
	t.Helper()
	if !s.newEnv(t).Capabilities().Files {
		t.Skip("the environment does not report Capabilities.Files")
	}
	env, _ := s.session(t, mods...)
	fsys, ok := env.(environment.FileSystem)
	if !ok {
		t.Fatalf("%T reports Capabilities.Files but does not implement environment.FileSystem", env)
	}
	return env, fsys
}

// upload uploads content to p and fails the test on error.
func (s *suite) upload(t tb, fsys environment.FileSystem, p string, content []byte, mode fs.FileMode) *environment.FileInfo {
	t.Helper()
	ctx, cancel := s.ctx(t)
	defer cancel()
	fi, err := fsys.Upload(ctx, p, bytes.NewReader(content), environment.UploadOptions{Mode: mode})
	if err != nil {
		t.Fatalf("Upload(%q, %d bytes): %v", p, len(content), err)
	}
	return fi
}

// download returns p's content and info, failing the test on error.
func (s *suite) download(t tb, fsys environment.FileSystem, p string) ([]byte, *environment.FileInfo) {
	t.Helper()
	ctx, cancel := s.ctx(t)
	defer cancel()
	rc, fi, err := fsys.Download(ctx, p)
	if err != nil {
		t.Fatalf("Download(%q): %v", p, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading the download of %q: %v", p, err)
	}
	return b, fi
}

// stat returns Stat(p)'s outcome.
func (s *suite) stat(t tb, fsys environment.FileSystem, p string) (*environment.FileInfo, error) {
	ctx, cancel := s.ctx(t)
	defer cancel()
	return fsys.Stat(ctx, p)
}

// testFilesRoundTrip: every byte value and a multi-MiB file survive an
// upload and a download, and the sandbox's commands see the same bytes.
func (s *suite) testFilesRoundTrip(t *testing.T) {
	env, fsys := s.fileSession(t)
	all := make([]byte, 256*4)
	for i := range all {
		all[i] = byte(i)
	}
	big := make([]byte, 6<<20+123)
	rng := mrand.NewChaCha8([32]byte{1, 2, 3})
	_, _ = rng.Read(big)
	for _, c := range []struct {
		path    string
		content []byte
	}{{"bin/all-bytes.bin", all}, {"/workspace/bin/big.bin", big}, {"empty.bin", nil}} {
		fi := s.upload(t, fsys, c.path, c.content, 0)
		if fi.Size != int64(len(c.content)) || fi.Type != environment.TypeFile {
			t.Errorf("Upload(%q) info %+v, want a file of %d bytes", c.path, fi, len(c.content))
		}
		got, dfi := s.download(t, fsys, c.path)
		if !bytes.Equal(got, c.content) {
			t.Errorf("Download(%q): %d bytes differing from the %d uploaded", c.path, len(got), len(c.content))
		}
		if dfi.Size != int64(len(c.content)) {
			t.Errorf("Download(%q) info size %d, want %d", c.path, dfi.Size, len(c.content))
		}
	}
	// The sandbox sees what was uploaded.
	sum := sha256.Sum256(big)
	if out := s.sh(t, env, "sha256sum bin/big.bin"); !strings.HasPrefix(out, hexString(sum[:])) {
		t.Errorf("sha256sum in the sandbox: %q, want %x", clip(out), sum)
	}
	// Overwriting replaces the content whole.
	s.upload(t, fsys, "bin/all-bytes.bin", []byte("short"), 0)
	if got, _ := s.download(t, fsys, "bin/all-bytes.bin"); string(got) != "short" {
		t.Errorf("after an overwrite the file holds %q", clip(string(got)))
	}
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// testFilesStat: Stat reports size, type, mode, owner and mtime, and does
// not follow a final symlink.
func (s *suite) testFilesStat(t *testing.T) {
	env, fsys := s.fileSession(t)
	before := time.Now().Add(-2 * time.Minute)
	s.upload(t, fsys, "f.txt", []byte("hello"), 0o640)
	s.sh(t, env, "mkdir d && ln -s f.txt link && ln -s /etc/passwd abs && chown 1234:2345 f.txt 2>/dev/null; true")
	fi, err := s.stat(t, fsys, "f.txt")
	if err != nil {
		t.Fatal(err)
	}
	if fi.Type != environment.TypeFile || fi.Size != 5 || fi.Mode != 0o640 || fi.ModTime.Before(before) || fi.Path != "f.txt" {
		t.Errorf("Stat(f.txt) = %+v, want a 5-byte file, mode 0640, recent mtime", fi)
	}
	if owner := strings.Fields(s.sh(t, env, "stat -c '%u %g' f.txt")); len(owner) == 2 && (owner[0] != itoa(fi.UID) || owner[1] != itoa(fi.GID)) {
		t.Errorf("Stat(f.txt) owner %d:%d, the sandbox says %s:%s", fi.UID, fi.GID, owner[0], owner[1])
	}
	for link, target := range map[string]string{"link": "f.txt", "abs": "/etc/passwd"} {
		fi, err := s.stat(t, fsys, link)
		if err != nil {
			t.Fatalf("Stat(%s): %v", link, err)
		}
		if fi.Type != environment.TypeSymlink || fi.LinkTarget != target {
			t.Errorf("Stat(%s) = %+v, want a symlink to %q (not followed)", link, fi, target)
		}
	}
	if fi, err := s.stat(t, fsys, "/workspace/d"); err != nil || fi.Type != environment.TypeDir {
		t.Errorf("Stat(/workspace/d) = %+v, %v, want a directory", fi, err)
	}
	if fi, err := s.stat(t, fsys, "."); err != nil || fi.Type != environment.TypeDir {
		t.Errorf("Stat(.) = %+v, %v, want the workspace directory", fi, err)
	}
	_, err = s.stat(t, fsys, "missing")
	wantErr(t, "Stat(missing)", err, environment.ErrFileNotFound)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat(missing) = %v, want it to match fs.ErrNotExist", err)
	}
}

func itoa(n uint32) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

// testFilesMkdirMoveRemove: mkdir with and without parents, move with and
// without overwrite, remove of files and trees; every refusal changes
// nothing.
func (s *suite) testFilesMkdirMoveRemove(t *testing.T) {
	env, fsys := s.fileSession(t)
	ctx, cancel := s.ctx(t)
	defer cancel()
	wantErr(t, "MakeDir without parents", fsys.MakeDir(ctx, "a/b/c", false), environment.ErrFileNotFound)
	if err := fsys.MakeDir(ctx, "a/b/c", true); err != nil {
		t.Fatal(err)
	}
	if err := fsys.MakeDir(ctx, "a/b/c", true); err != nil {
		t.Errorf("MakeDir of an existing directory with parents: %v", err)
	}
	wantErr(t, "MakeDir of an existing directory", fsys.MakeDir(ctx, "a/b/c", false), environment.ErrFileExists)
	if err := fsys.MakeDir(ctx, "/workspace/a/x", false); err != nil {
		t.Errorf("MakeDir(/workspace/a/x): %v", err)
	}
	s.upload(t, fsys, "a/one.txt", []byte("one"), 0)
	s.upload(t, fsys, "a/two.txt", []byte("two"), 0)
	wantErr(t, "Move onto an existing file", fsys.Move(ctx, "a/one.txt", "a/two.txt", false), environment.ErrFileExists)
	if got, _ := s.download(t, fsys, "a/two.txt"); string(got) != "two" {
		t.Errorf("a refused move changed the target: %q", got)
	}
	if err := fsys.Move(ctx, "a/one.txt", "a/two.txt", true); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.download(t, fsys, "a/two.txt"); string(got) != "one" {
		t.Errorf("after Move with overwrite a/two.txt = %q, want one", got)
	}
	if err := fsys.Move(ctx, "a/two.txt", "/workspace/a/b/c/moved.txt", false); err != nil {
		t.Fatal(err)
	}
	if out := s.sh(t, env, "cat a/b/c/moved.txt; test -e a/one.txt || echo gone"); out != "one" && !strings.Contains(out, "one") {
		t.Errorf("the sandbox sees %q after the moves", out)
	}
	wantErr(t, "Move of a missing file", fsys.Move(ctx, "nope", "x", false), environment.ErrFileNotFound)
	wantErr(t, "Remove of a non-empty directory", fsys.Remove(ctx, "a", false), environment.ErrInvalidArgument)
	if _, err := s.stat(t, fsys, "a/b/c/moved.txt"); err != nil {
		t.Errorf("a refused Remove removed something: %v", err)
	}
	if err := fsys.Remove(ctx, "a/x", false); err != nil {
		t.Errorf("Remove of an empty directory: %v", err)
	}
	if err := fsys.Remove(ctx, "a", true); err != nil {
		t.Fatal(err)
	}
	_, err := s.stat(t, fsys, "a")
	wantErr(t, "Stat after a recursive Remove", err, environment.ErrFileNotFound)
	wantErr(t, "Remove of a missing file", fsys.Remove(ctx, "a", false), environment.ErrFileNotFound)
	wantErr(t, "Remove of the workspace", fsys.Remove(ctx, "/workspace", true), environment.ErrInvalidArgument)
	// A recursive remove never follows a symlink out of the tree.
	s.sh(t, env, "mkdir -p t && echo keep > keep.txt && ln -s .. t/up && ln -s ../keep.txt t/k")
	if err := fsys.Remove(ctx, "t", true); err != nil {
		t.Fatal(err)
	}
	if got := s.read(t, env, "keep.txt"); got != "keep\n" {
		t.Errorf("a recursive remove followed a symlink: keep.txt = %q", got)
	}
}

// testFilesListDir: entries in name order with their info, to a depth.
func (s *suite) testFilesListDir(t *testing.T) {
	env, fsys := s.fileSession(t)
	s.sh(t, env, "mkdir -p l/sub/deeper && echo 12345 > l/b.txt && echo x > l/sub/s.txt && ln -s sub l/a-link")
	ctx, cancel := s.ctx(t)
	defer cancel()
	got, err := fsys.ListDir(ctx, "l", environment.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, fi := range got {
		names = append(names, fi.Path+":"+string(fi.Type))
	}
	if want := "l/a-link:symlink l/b.txt:file l/sub:dir"; strings.Join(names, " ") != want {
		t.Errorf("ListDir(l) = %v, want %s", names, want)
	}
	if len(got) == 3 && (got[1].Size != 6 || got[0].LinkTarget != "sub") {
		t.Errorf("ListDir(l) infos %+v: want b.txt of 6 bytes, a-link to sub", got)
	}
	deep, err := fsys.ListDir(ctx, "/workspace/l", environment.ListOptions{Depth: 3})
	if err != nil {
		t.Fatal(err)
	}
	names = names[:0]
	for _, fi := range deep {
		names = append(names, fi.Path)
	}
	if want := "/workspace/l/a-link /workspace/l/b.txt /workspace/l/sub /workspace/l/sub/deeper /workspace/l/sub/s.txt"; strings.Join(names, " ") != want {
		t.Errorf("ListDir(/workspace/l, depth 3) = %v, want %s", names, want)
	}
	_, err = fsys.ListDir(ctx, "l/b.txt", environment.ListOptions{})
	wantErr(t, "ListDir of a file", err, environment.ErrInvalidArgument)
	_, err = fsys.ListDir(ctx, "l", environment.ListOptions{Depth: -1})
	wantErr(t, "ListDir with a negative depth", err, environment.ErrInvalidArgument)
}

// testFilesEscapes: "..", absolute paths outside the workspace and
// symlinks out of it fail with ErrPathEscapes in every call. Where the
// session has its own root (Capabilities.WritableRoot) every absolute path
// names a file of that root: only links out of it (or absolute links)
// escape, and "/etc/passwd" is the sandbox's own.
func (s *suite) testFilesEscapes(t *testing.T) {
	env, fsys := s.fileSession(t)
	s.sh(t, env, "ln -s / root && ln -s ../../.. up && mkdir -p d")
	ctx, cancel := s.ctx(t)
	defer cancel()
	escapes := []string{"../x", "d/../../x", "/etc/passwd", "/workspace/../etc/passwd", "root/etc/passwd", "up/etc/passwd"}
	ownRoot := env.Capabilities().WritableRoot
	if ownRoot {
		escapes = []string{"root/etc/passwd", "up/etc/passwd"}
		s.testFilesOwnRoot(t, env, fsys)
	}
	for _, p := range escapes {
		s.wantEscapes(t, fsys, p)
	}
	if !ownRoot {
		for _, p := range []string{"root", "/", "root/"} {
			_, err := fsys.ListDir(ctx, p, environment.ListOptions{})
			wantErr(t, "ListDir("+p+")", err, environment.ErrPathEscapes)
		}
	}
	_, err := fsys.Stat(ctx, "a\x00b")
	wantErr(t, "Stat with NUL", err, environment.ErrInvalidArgument)
	if _, err := s.stat(t, fsys, "d"); err != nil {
		t.Errorf("the refused calls changed the workspace: Stat(d): %v", err)
	}
}

// wantEscapes checks that every call of the file API on p fails with
// ErrPathEscapes.
func (s *suite) wantEscapes(t *testing.T, fsys environment.FileSystem, p string) {
	t.Helper()
	ctx, cancel := s.ctx(t)
	defer cancel()
	_, err := fsys.Stat(ctx, p)
	wantErr(t, "Stat("+p+")", err, environment.ErrPathEscapes)
	_, _, err = fsys.Download(ctx, p)
	wantErr(t, "Download("+p+")", err, environment.ErrPathEscapes)
	_, err = fsys.Upload(ctx, p+"-envtest", strings.NewReader("escaped"), environment.UploadOptions{})
	wantErr(t, "Upload("+p+")", err, environment.ErrPathEscapes)
	_, err = fsys.ListDir(ctx, p, environment.ListOptions{})
	wantErr(t, "ListDir("+p+")", err, environment.ErrPathEscapes)
	wantErr(t, "MakeDir("+p+")", fsys.MakeDir(ctx, p+"-envtest", true), environment.ErrPathEscapes)
	wantErr(t, "Remove("+p+")", fsys.Remove(ctx, p, true), environment.ErrPathEscapes)
	wantErr(t, "Move(d, "+p+")", fsys.Move(ctx, "d", p+"-envtest", false), environment.ErrPathEscapes)
	_, err = fsys.WatchDir(ctx, p, environment.WatchOptions{})
	wantErr(t, "WatchDir("+p+")", err, environment.ErrPathEscapes)
}

// testFilesOwnRoot: in a session with its own root, absolute paths and
// ".." above /workspace name files of that root, the ones its commands
// see: an upload to /etc shows to a command, the sandbox's /etc/passwd
// (with the image's default user) is read, and "/" lists the root.
func (s *suite) testFilesOwnRoot(t *testing.T, env environment.Environment, fsys environment.FileSystem) {
	ctx, cancel := s.ctx(t)
	defer cancel()
	if _, err := fsys.Upload(ctx, "/etc/envtest-up", strings.NewReader("in-root"), environment.UploadOptions{}); err != nil {
		t.Fatalf("Upload(/etc/envtest-up): %v", err)
	}
	if out := s.sh(t, env, "cat /etc/envtest-up"); !strings.Contains(out, "in-root") {
		t.Errorf("a command reads %q from the uploaded /etc/envtest-up", out)
	}
	if _, err := fsys.Upload(ctx, "../up-dotdot", strings.NewReader("dotdot"), environment.UploadOptions{}); err != nil {
		t.Fatalf("Upload(../up-dotdot): %v", err)
	}
	if out := s.sh(t, env, "cat /up-dotdot"); !strings.Contains(out, "dotdot") {
		t.Errorf("a command reads %q from /up-dotdot, uploaded as ../up-dotdot", out)
	}
	rc, _, err := fsys.Download(ctx, "/etc/passwd")
	if err != nil {
		t.Fatalf("Download(/etc/passwd): %v", err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading /etc/passwd: %v", err)
	}
	if want := s.sh(t, env, "cat /etc/passwd"); string(b) != want {
		t.Errorf("Download(/etc/passwd) = %q, the sandbox's is %q", b, want)
	}
	entries, err := fsys.ListDir(ctx, "/", environment.ListOptions{})
	if err != nil {
		t.Fatalf("ListDir(/): %v", err)
	}
	names := map[string]bool{}
	for _, e := range entries {
		names[path.Base(e.Path)] = true
	}
	for _, want := range []string{"etc", "workspace", "tmp"} {
		if !names[want] {
			t.Errorf("ListDir(/) lacks %s: %v", want, names)
		}
	}
}

// testFilesRace: while a command flips a symlink between a directory
// inside and one outside, and swaps a directory of a tree for a symlink
// to outside, uploads, downloads, stats, listings and recursive removes
// through them never read, list, write or delete anything outside.
func (s *suite) testFilesRace(t *testing.T) {
	if !s.cfg.hostLocal {
		t.Skip("needs to see the host filesystem")
	}
	env, fsys := s.fileSession(t)
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "victim"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"bait.txt", "victim/keep.txt"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("host-bait"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s.sh(t, env, "mkdir -p inside && echo inside > inside/bait.txt && ln -s inside flip")
	var wg sync.WaitGroup
	var flips string
	wg.Go(func() {
		flips = s.sh(t, env, `n=0; end=$(($(date +%s)+2)); while [ "$(date +%s)" -lt $end ]; do
ln -sfn `+quote(dir)+` flip 2>/dev/null || rm -rf flip; ln -sfn inside flip 2>/dev/null || rm -rf flip
mkdir -p tree/sub/deep 2>/dev/null && touch tree/sub/deep/f 2>/dev/null; rm -rf tree/sub; ln -sfn `+quote(dir)+` tree/sub 2>/dev/null; rm -f tree/sub; n=$((n+1)); done 2>/dev/null; echo $n`)
	})
	deadline := time.Now().Add(2 * time.Second)
	var ok, escaped int
	for i := 0; time.Now().Before(deadline); i++ {
		ctx, cancel := s.ctx(t)
		var err error
		switch i % 5 {
		case 0:
			_, err = fsys.Upload(ctx, "flip/race.bin", strings.NewReader("envtest escaped"), environment.UploadOptions{})
		case 1:
			var rc io.ReadCloser
			if rc, _, err = fsys.Download(ctx, "flip/bait.txt"); err == nil {
				b, _ := io.ReadAll(rc)
				rc.Close()
				if strings.Contains(string(b), "host-bait") {
					t.Error("a download through a flipping symlink read a host file")
				}
			}
		case 2:
			var list []environment.FileInfo
			list, err = fsys.ListDir(ctx, "flip", environment.ListOptions{Depth: 3})
			for _, fi := range list {
				if strings.Contains(fi.Path, "victim") {
					t.Errorf("a listing through a flipping symlink saw %s", fi.Path)
				}
			}
		case 3:
			err = fsys.Remove(ctx, "tree", true)
		case 4:
			var fi *environment.FileInfo
			if fi, err = fsys.Stat(ctx, "flip/victim"); err == nil {
				t.Errorf("Stat through a flipping symlink found %+v", fi)
			}
		}
		cancel()
		switch {
		case err == nil:
			ok++
		case errors.Is(err, environment.ErrPathEscapes):
			escaped++
		}
	}
	wg.Wait()
	t.Logf("%d calls succeeded inside, %d refused as escapes, %s flips", ok, escaped, strings.TrimSpace(flips))
	for _, f := range []string{"bait.txt", "victim/keep.txt"} {
		if b, err := os.ReadFile(filepath.Join(dir, f)); err != nil || string(b) != "host-bait" {
			t.Errorf("the host file %s was changed or removed: %q, %v", f, b, err)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("something landed outside the workspace: %v", entries)
	}
}
