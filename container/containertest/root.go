package containertest

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/snapshot/guard"
)

// Cases of a sandbox with its own root (container.Spec.Root), run when
// the suite has WithOwnRoot.

// WithOwnRoot declares that the runtime runs commands chrooted into
// Spec.Root, enabling the OwnRoot cases (gvisor, runc).
func WithOwnRoot() Option { return func(c *config) { c.ownRoot = true } }

var rootCases = []testCase{
	{"OwnRootWritable", (*suite).testOwnRootWritable},
	{"OwnRootNoAdminCapability", (*suite).testOwnRootNoAdmin},
	{"OwnRootSwappedTree", (*suite).testOwnRootSwapped},
	{"OwnRootHostileMountpoints", (*suite).testOwnRootHostileMountpoints},
	{"OwnRootReadOnly", (*suite).testOwnRootReadOnly},
}

// rootBox starts a sandbox whose root is a copy of the suite's image in
// a volume-like layout (<tmp>/vol/tree, workspace inside it) and returns
// it with the tree's host path.
func (s *suite) rootBox(t *testing.T, readOnly bool) (box, string) {
	t.Helper()
	if !s.cfg.ownRoot {
		t.Skip("the runtime does not run commands in their own root (no WithOwnRoot)")
	}
	tree := copyImage(t, s.cfg.rootfs(t), filepath.Join(t.TempDir(), "vol"), "tree")
	b := s.start(t, func(sp *container.Spec) {
		sp.Root, sp.Workspace, sp.ReadOnlyRoot = tree, filepath.Join(tree, "workspace"), readOnly
	})
	return b, tree
}

// copyImage copies image to dir/name (cp -a) with an empty workspace.
func copyImage(t *testing.T, image, dir, name string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tree := filepath.Join(dir, name)
	if out, err := exec.Command("cp", "-a", image, tree).CombinedOutput(); err != nil {
		t.Fatalf("copying the image: %v: %s", err, out)
	}
	if err := os.MkdirAll(filepath.Join(tree, "workspace"), 0o755); err != nil {
		t.Fatal(err)
	}
	return tree
}

// testOwnRootWritable: writes outside /workspace land in the tree on the
// host, a program installed under /usr/local/bin runs, commands start in
// /workspace and may start anywhere in the root, and the agent's mounts
// in the tree do not show on the host.
func (s *suite) testOwnRootWritable(t *testing.T) {
	b, tree := s.rootBox(t, false)
	out := MustSh(t, b.sb, `set -e; pwd; echo etc > /etc/turnbox-test; mkdir -p /usr/local/bin /usr/local/lib/py /home/user
printf '#!/bin/sh\necho installed-ran\n' > /usr/local/bin/tb-tool; chmod 755 /usr/local/bin/tb-tool
echo lib > /usr/local/lib/py/mod.py; echo home > /home/user/f; echo tmp > /tmp/f; echo ws > /workspace/f
tb-tool; test -c /dev/null; test -d /proc/self; test -d /sys/kernel`)
	if out != "/workspace\ninstalled-ran\n" {
		t.Errorf("output %q, want /workspace and installed-ran", out)
	}
	for rel, want := range map[string]string{"etc/turnbox-test": "etc", "usr/local/lib/py/mod.py": "lib", "home/user/f": "home", "tmp/f": "tmp", "workspace/f": "ws"} {
		if b, err := os.ReadFile(filepath.Join(tree, rel)); err != nil || string(b) != want+"\n" {
			t.Errorf("host %s: %q, %v; want %q", rel, b, err, want)
		}
	}
	var o Buffer
	st, err := b.sb.Exec(ctxT(t), container.Process{Args: []string{"pwd"}, Dir: "/etc", Stdout: &o})
	if err != nil || st.Code != 0 || o.String() != "/etc\n" {
		t.Errorf("Exec in Dir /etc: %+v %v %q", st, err, o.String())
	}
	if m := hostMountsUnder(t, tree); len(m) > 0 {
		t.Errorf("the sandbox's mounts show on the host: %v", m)
	}
	// chroot is not the boundary (a root command with CAP_SYS_CHROOT can
	// leave it for the agent's root): the volume's directory stays sealed.
	if sealed, err := guard.Sealed(filepath.Dir(tree)); err != nil || !sealed {
		t.Errorf("the root tree's directory: sealed=%v err=%v, want sealed", sealed, err)
	}
}

// hostMountsUnder lists the host's mount points at or below dir.
func hostMountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var found []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			found = append(found, fields[4])
		}
	}
	return found
}

// testOwnRootNoAdmin: the agent holds CAP_SYS_ADMIN for its mounts, a
// command has it in no set and cannot mount.
func (s *suite) testOwnRootNoAdmin(t *testing.T) {
	b, _ := s.rootBox(t, false)
	out := MustSh(t, b.sb, "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb):' /proc/self/status")
	const sysAdmin = 21
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		name, hex, _ := strings.Cut(line, ":")
		v, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
		if err != nil {
			t.Fatalf("parsing %q: %v", line, err)
		}
		n++
		if v&(1<<sysAdmin) != 0 {
			t.Errorf("%s = %s: a command has CAP_SYS_ADMIN", name, strings.TrimSpace(hex))
		}
	}
	if n != 5 {
		t.Errorf("read %d capability sets from %q, want 5", n, out)
	}
	if st, _, _ := Sh(t, b.sb, "mkdir -p /tmp/m && mount -t tmpfs none /tmp/m"); st.Code == 0 {
		t.Error("a command mounted a tmpfs")
	}
}

// testOwnRootSwapped: a tree exchanged into place on the host (a
// rollback) is what the next command sees, with working /proc and /dev.
func (s *suite) testOwnRootSwapped(t *testing.T) {
	b, tree := s.rootBox(t, false)
	MustSh(t, b.sb, "echo old > /etc/marker; cat /proc/self/stat >/dev/null")
	next := copyImage(t, s.cfg.rootfs(t), t.TempDir(), "next")
	if err := os.WriteFile(filepath.Join(next, "etc", "marker"), []byte("new\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	exchange(t, next, tree)
	if out := MustSh(t, b.sb, "cat /etc/marker; test -c /dev/null && head -c 3 /proc/self/stat >/dev/null && echo ok"); out != "new\nok\n" {
		t.Errorf("after the exchange: %q, want new and ok", out)
	}
}

// exchange swaps src into place at dst (RENAME_EXCHANGE through the
// sealed volume directory, as a backend's rollback does).
func exchange(t *testing.T, src, dst string) {
	t.Helper()
	err := guard.Unsealed(filepath.Dir(dst), func() error {
		return unix.Renameat2(unix.AT_FDCWD, src, unix.AT_FDCWD, dst, unix.RENAME_EXCHANGE)
	})
	if err != nil {
		t.Fatalf("exchanging the tree: %v", err)
	}
}

// testOwnRootHostileMountpoints: a tree whose /proc and /dev are symlinks
// (into the workspace) does not make the agent mount anywhere but the
// tree's own directories of those names.
func (s *suite) testOwnRootHostileMountpoints(t *testing.T) {
	b, tree := s.rootBox(t, false)
	next := copyImage(t, s.cfg.rootfs(t), t.TempDir(), "next")
	for _, name := range []string{"proc", "dev"} {
		target := filepath.Join(next, "workspace", "t"+name)
		if err := os.Mkdir(target, 0o755); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(next, name)
		if err := os.RemoveAll(p); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("workspace/t"+name, p); err != nil {
			t.Fatal(err)
		}
	}
	exchange(t, next, tree)
	out := MustSh(t, b.sb, "ls -A /workspace/tproc /workspace/tdev; test -d /proc/self && test -c /dev/null && echo mounted")
	if out != "/workspace/tdev:\n\n/workspace/tproc:\nmounted\n" {
		t.Errorf("got %q: want empty link targets and /proc and /dev mounted in their own directories", out)
	}
	for _, name := range []string{"proc", "dev"} {
		if fi, err := os.Lstat(filepath.Join(tree, name)); err != nil || !fi.IsDir() {
			t.Errorf("host %s: %v %v, want the link replaced by a directory", name, fi, err)
		}
	}
}

// testOwnRootReadOnly: with ReadOnlyRoot writes outside /workspace fail
// with EROFS, /workspace stays writable.
func (s *suite) testOwnRootReadOnly(t *testing.T) {
	b, tree := s.rootBox(t, true)
	st, _, errs := Sh(t, b.sb, "echo x > /etc/ro-test")
	if st.Code == 0 || !strings.Contains(errs, "Read-only file system") {
		t.Errorf("writing /etc: %+v %q, want Read-only file system", st, errs)
	}
	MustSh(t, b.sb, "echo w > /workspace/rw && test -d /proc/self")
	if _, err := os.Stat(filepath.Join(tree, "etc", "ro-test")); err == nil {
		t.Error("/etc/ro-test written on a read-only root")
	}
	if got, err := os.ReadFile(filepath.Join(tree, "workspace", "rw")); err != nil || string(got) != "w\n" {
		t.Errorf("workspace write: %q %v", got, err)
	}
}
