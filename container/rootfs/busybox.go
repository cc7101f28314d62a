package rootfs

import (
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// ErrNoBusybox reports that no static busybox binary was found.
var ErrNoBusybox = errors.New("rootfs: static busybox not found (apt install busybox-static)")

// BusyboxCandidates are the paths FindBusybox tries, in order.
var BusyboxCandidates = []string{"/bin/busybox", "/usr/bin/busybox", "/usr/local/bin/busybox"}

// FindBusybox returns the path of a statically linked busybox binary. A
// dynamically linked one is rejected: it would not run without the host's
// libraries inside the sandbox.
func FindBusybox() (string, error) {
	for _, p := range BusyboxCandidates {
		if static, err := isStatic(p); err == nil && static {
			return p, nil
		}
	}
	return "", ErrNoBusybox
}

func isStatic(p string) (bool, error) {
	f, err := elf.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return false, nil
		}
	}
	return true, nil
}

// BashStaticCandidates are the paths of a static bash (Debian's
// bash-static) that BuildBusybox copies into images as /bin/bash.
var BashStaticCandidates = []string{"/bin/bash-static", "/usr/bin/bash-static"}

// findBashStatic returns the path of a statically linked bash on the
// host, or "" when there is none.
func findBashStatic() string {
	for _, p := range BashStaticCandidates {
		if static, err := isStatic(p); err == nil && static {
			return p
		}
	}
	return ""
}

// BuildBusybox builds a minimal root filesystem in dir (created if
// needed): bin/busybox copied from the host's static busybox, a symlink in
// bin/ for each of its applets, bin/bash when the host has a static bash
// (BashStaticCandidates: E2B's clients run commands with /bin/bash), the usual empty top-level directories
// (proc, sys, dev, tmp, etc, workspace, ...), and small etc/passwd,
// etc/group and etc/hosts files, and the runtimes' mount points under
// /.turnbox. Besides root (home /root) the image has a default non-root
// user, DefaultUser (uid and gid DefaultUID, home /home/user, shell
// /bin/sh), whose home directory it owns. Existing files are replaced.
func BuildBusybox(dir string) error {
	src, err := FindBusybox()
	if err != nil {
		return err
	}
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root", "home", "var/tmp", "workspace"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return fmt.Errorf("rootfs: %w", err)
		}
	}
	// The image's root is the sandbox's /: every user must traverse it
	// (dir may come from os.MkdirTemp, which makes it 0700).
	if err := os.Chmod(dir, 0o755); err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	for _, d := range []string{"tmp", "var/tmp"} {
		if err := os.Chmod(filepath.Join(dir, d), 0o1777); err != nil {
			return fmt.Errorf("rootfs: %w", err)
		}
	}
	dst := filepath.Join(dir, "bin", "busybox")
	if err := copyFile(src, dst, 0o755); err != nil {
		return err
	}
	out, err := exec.Command(src, "--list").Output()
	if err != nil {
		return fmt.Errorf("rootfs: %s --list: %w", src, err)
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "busybox" || strings.Contains(applet, "/") {
			continue
		}
		link := filepath.Join(dir, "bin", applet)
		if err := os.Remove(link); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rootfs: %w", err)
		}
		if err := os.Symlink("busybox", link); err != nil {
			return fmt.Errorf("rootfs: %w", err)
		}
	}
	if bash := findBashStatic(); bash != "" {
		// Replaces a bash applet's link, if busybox has one.
		if err := copyFile(bash, filepath.Join(dir, "bin", "bash"), 0o755); err != nil {
			return err
		}
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\n" +
			"user:x:1000:1000:user:/home/user:/bin/sh\n" +
			"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group": "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n",
		"etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return fmt.Errorf("rootfs: %w", err)
		}
	}
	if err := makeHome(dir); err != nil {
		return err
	}
	return makeMountpoints(dir)
}

// DefaultUser is the non-root user of images built by BuildBusybox, and
// DefaultUID its uid and gid.
const (
	DefaultUser = "user"
	DefaultUID  = 1000
)

// makeHome creates /home/user in the image, owned by DefaultUID when the
// builder is root (others cannot give files away; the image is then
// owned by its builder as a whole). An entry there that is not a
// directory (a symlink out of the image, say) is refused rather than
// followed.
func makeHome(dir string) error {
	p := filepath.Join(dir, "home", DefaultUser)
	if err := os.Mkdir(p, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("rootfs: %w", err)
	}
	if fi, err := os.Lstat(p); err != nil || !fi.IsDir() {
		return fmt.Errorf("rootfs: the image's /home/%s is not a directory", DefaultUser)
	}
	if os.Geteuid() != 0 {
		return nil
	}
	if err := os.Lchown(p, DefaultUID, DefaultUID); err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	return nil
}

// MountpointDirs and MountpointFiles are the mount points the runtimes
// need in an image (relative to its root): every image BuildBusybox and
// Import make has them, so that starting a sandbox never creates them in
// the image directory (container/gvisor refuses an image without them).
var (
	MountpointDirs  = []string{"dev", "proc", "sys", ".turnbox", ".turnbox/vol"}
	MountpointFiles = []string{".turnbox/agent"}
)

// AddMountpoints adds the mount points to an existing image built before
// images carried them. Like makeMountpoints, it refuses rather than
// follows entries that are not what they should be.
func AddMountpoints(dir string) error { return makeMountpoints(dir) }

// makeMountpoints creates MountpointDirs and MountpointFiles in an image
// being built. An image whose entries exist as anything else (a symlink out
// of it, say) is refused rather than followed.
func makeMountpoints(dir string) error {
	for _, d := range MountpointDirs {
		p := filepath.Join(dir, d)
		if err := os.Mkdir(p, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("rootfs: %w", err)
		}
		if fi, err := os.Lstat(p); err != nil || !fi.IsDir() {
			return fmt.Errorf("rootfs: the image's /%s is not a directory", d)
		}
	}
	for _, name := range MountpointFiles {
		if err := makeFile(filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

// makeFile creates an empty regular file at p unless one is there; it
// never follows a symlink nor blocks on a FIFO.
func makeFile(p string) error {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o755)
	if err != nil {
		return fmt.Errorf("rootfs: making mount point %s: %w", p, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("rootfs: mount point %s is not a regular file", p)
	}
	return nil
}

// CheckMountpoints reports whether the image at dir has every mount point
// the runtimes need, as a real directory or regular file (not a symlink).
func CheckMountpoints(dir string) error {
	for _, d := range MountpointDirs {
		if fi, err := os.Lstat(filepath.Join(dir, d)); err != nil || !fi.IsDir() {
			return fmt.Errorf("rootfs: image %s has no directory /%s (rebuild or re-import it: turnbox image build/import make the runtimes' mount points)", dir, d)
		}
	}
	for _, f := range MountpointFiles {
		if fi, err := os.Lstat(filepath.Join(dir, f)); err != nil || !fi.Mode().IsRegular() {
			return fmt.Errorf("rootfs: image %s has no file /%s (rebuild or re-import it: turnbox image build/import make the runtimes' mount points)", dir, f)
		}
	}
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("rootfs: copy %s: %w", src, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	return os.Rename(tmp, dst)
}
