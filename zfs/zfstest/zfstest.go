// Package zfstest provides test fixtures for ZFS: a zfs-fuse daemon shared
// by a whole test binary when the kernel has no ZFS, and file-backed pools
// with unique names that are destroyed when the test ends.
//
// zfs-fuse is one daemon per machine: StartFuse starts it at most once per
// test binary (and only if no ZFS is reachable yet), and Shutdown, called
// from TestMain after m.Run, stops it again if this binary started it:
//
//	func TestMain(m *testing.M) {
//		code := m.Run()
//		zfstest.Shutdown()
//		os.Exit(code)
//	}
//
// Missing dependencies (root, zfs-fuse, zpool) skip the test locally and
// fail it in CI (internal/testenv).
package zfstest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/turnbox/turnbox/internal/testenv"
)

var (
	once     sync.Once
	startErr error
	started  *os.Process // the daemon this binary started, if any
	pidfile  string
	poolSeq  atomic.Int64
	poolsMu  sync.Mutex
	pools    = map[string]bool{}
)

// Kernel reports whether the kernel has ZFS (/dev/zfs exists).
func Kernel() bool {
	_, err := os.Stat("/dev/zfs")
	return err == nil
}

// reachable reports whether zpool can talk to ZFS (kernel or daemon).
func reachable() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, "zpool", "list", "-H", "-o", "name").Run() == nil
}

// StartFuse makes ZFS reachable for the test: kernel ZFS if present, else
// a zfs-fuse daemon already running, else one it starts (once per test
// binary; Shutdown stops it). It requires root and the zfs, zpool and,
// without kernel ZFS, zfs-fuse binaries.
func StartFuse(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "zfs")
	testenv.RequireBinary(t, "zpool")
	if Kernel() {
		return
	}
	testenv.RequireBinary(t, "zfs-fuse")
	testenv.Require(t, fileExists("/dev/fuse"), "/dev/fuse (FUSE) for zfs-fuse")
	once.Do(func() { startErr = start() })
	if startErr != nil {
		t.Fatalf("zfstest: %v", startErr)
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func start() error {
	if reachable() {
		return nil // someone else's daemon: use it, never stop it
	}
	dir, err := os.MkdirTemp("", "turnbox-zfs-fuse-")
	if err != nil {
		return err
	}
	pidfile = filepath.Join(dir, "zfs-fuse.pid")
	// zfs-fuse daemonizes; the pidfile names the daemon.
	out, err := exec.Command("zfs-fuse", "--pidfile", pidfile).CombinedOutput()
	if err != nil {
		return fmt.Errorf("starting zfs-fuse: %v: %s", err, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !reachable() {
		if time.Now().After(deadline) {
			return fmt.Errorf("zfs-fuse started but zpool cannot reach it after 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	data, err := os.ReadFile(pidfile)
	if err != nil {
		return fmt.Errorf("zfs-fuse pidfile: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return fmt.Errorf("zfs-fuse pidfile %s: %v", pidfile, err)
	}
	started, _ = os.FindProcess(pid)
	return nil
}

// Shutdown destroys the pools NewPool made that are still there and stops
// the zfs-fuse daemon if this binary started it. Call it from TestMain.
func Shutdown() {
	poolsMu.Lock()
	for p := range pools {
		_ = exec.Command("zpool", "destroy", "-f", p).Run()
	}
	pools = map[string]bool{}
	poolsMu.Unlock()
	if started == nil {
		return
	}
	_ = started.Signal(syscall.SIGTERM)
	for i := 0; i < 100; i++ {
		if started.Signal(syscall.Signal(0)) != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if pidfile != "" {
		os.RemoveAll(filepath.Dir(pidfile))
	}
	started = nil
}

// NewPool creates a pool of size bytes on a sparse file in a temporary
// directory, with its root dataset unmounted (mountpoint=none), and
// destroys it when the test ends. It returns the pool's name, unique per
// process and call. It calls StartFuse first.
func NewPool(t testing.TB, size int64) string {
	t.Helper()
	StartFuse(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "pool.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	name := fmt.Sprintf("tbt%dp%d", os.Getpid(), poolSeq.Add(1))
	if out, err := exec.Command("zpool", "create", "-f", "-m", "none", name, img).CombinedOutput(); err != nil {
		t.Fatalf("zpool create %s: %v: %s", name, err, out)
	}
	poolsMu.Lock()
	pools[name] = true
	poolsMu.Unlock()
	t.Cleanup(func() {
		var out []byte
		var err error
		for i := 0; i < 20; i++ {
			if out, err = exec.Command("zpool", "destroy", "-f", name).CombinedOutput(); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("zpool destroy %s: %v: %s", name, err, out)
		}
		poolsMu.Lock()
		delete(pools, name)
		poolsMu.Unlock()
	})
	return name
}

// DestroyAll destroys dataset with all its descendants and their clones
// (zfs destroy -R), for test cleanup only.
func DestroyAll(t testing.TB, dataset string) {
	t.Helper()
	var out []byte
	var err error
	// zfs-fuse reports "dataset is busy" for a while after a volume's
	// last use on a loaded machine (seen in CI at load 13 past 2 s).
	for deadline := time.Now().Add(20 * time.Second); ; {
		out, err = exec.Command("zfs", "destroy", "-R", dataset).CombinedOutput()
		if err == nil || strings.Contains(string(out), "does not exist") {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Errorf("zfs destroy -R %s: %v: %s", dataset, err, out)
}
