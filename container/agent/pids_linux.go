package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// pidsCgroup is the pids cgroup (v1 hierarchy) commands are confined to.
// In cgroup v1 membership is per thread and a child starts in its parent
// thread's cgroup, so the agent's forking thread (see forker) lives in it
// and every command starts there, with no window outside it.
type pidsCgroup struct {
	dir string
}

// setupPidsCgroup creates a child of the agent's pids cgroup named
// turnbox-exec with pids.max = limit plus two: the forking thread and the
// launcher (see WithLauncher) live in it too.
func setupPidsCgroup(limit int64) (*pidsCgroup, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	var own string
	found := false
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "pids" {
				own, found = parts[2], true
			}
		}
	}
	if !found {
		return nil, fmt.Errorf("agent: no pids cgroup in /proc/self/cgroup")
	}
	// The hierarchy may be mounted at its root, or (in a container) with
	// the agent's own cgroup as the mount's root.
	home := filepath.Join("/sys/fs/cgroup/pids", own)
	if _, err := os.Stat(filepath.Join(home, "tasks")); err != nil {
		home = "/sys/fs/cgroup/pids"
		if _, err := os.Stat(filepath.Join(home, "tasks")); err != nil {
			return nil, fmt.Errorf("agent: pids cgroup not mounted at /sys/fs/cgroup/pids: %w", err)
		}
	}
	dir := filepath.Join(home, "turnbox-exec")
	if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pids.max"), []byte(strconv.FormatInt(limit+2, 10)), 0); err != nil {
		return nil, fmt.Errorf("agent: set pids.max: %w", err)
	}
	return &pidsCgroup{dir: dir}, nil
}

// forker starts every command from one dedicated OS thread, set up once:
// moved into the commands' pids cgroup, and without CAP_SYS_RESOURCE in
// its capability bounding set when the agent limits RLIMIT_NPROC, so that
// commands cannot exceed the limit the agent itself is exempt from.
// (Capabilities and v1 cgroup membership are per thread; the thread is
// never returned to the Go scheduler's pool, and a locked thread does not
// start the runtime's other threads, so nothing else inherits its state.)
type forker struct {
	reqs chan forkReq
}

type forkReq struct {
	path string
	args []string
	attr *syscall.ProcAttr
	done chan forkResult
}

type forkResult struct {
	pid int
	err error
}

// startForker starts the forking thread. cg may be nil; dropResource
// drops CAP_SYS_RESOURCE from the thread's bounding set, so commands
// (which run as root in a sandbox) do not get it back through execve;
// dropAdmin drops CAP_SYS_ADMIN (which the agent keeps for the mounts of
// WithRoot) from its bounding and inheritable sets alike.
func startForker(cg *pidsCgroup, dropResource, dropAdmin bool) (*forker, error) {
	f := &forker{reqs: make(chan forkReq)}
	ready := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // for good: the thread dies with the agent
		if cg != nil {
			tid := []byte(strconv.Itoa(unix.Gettid()))
			if err := os.WriteFile(filepath.Join(cg.dir, "tasks"), tid, 0); err != nil {
				ready <- fmt.Errorf("agent: enter pids cgroup: %w", err)
				return
			}
		}
		if dropResource {
			if err := unix.Prctl(unix.PR_CAPBSET_DROP, unix.CAP_SYS_RESOURCE, 0, 0, 0); err != nil {
				ready <- fmt.Errorf("agent: drop CAP_SYS_RESOURCE for commands: %w", err)
				return
			}
		}
		if dropAdmin {
			if err := dropCap(unix.CAP_SYS_ADMIN); err != nil {
				ready <- fmt.Errorf("agent: drop CAP_SYS_ADMIN for commands: %w", err)
				return
			}
		}
		ready <- nil
		for r := range f.reqs {
			pid, err := syscall.ForkExec(r.path, r.args, r.attr)
			r.done <- forkResult{pid, err}
		}
	}()
	if err := <-ready; err != nil {
		return nil, err
	}
	return f, nil
}

// forkExec runs syscall.ForkExec on the forking thread.
func (f *forker) forkExec(path string, args []string, attr *syscall.ProcAttr) (int, error) {
	done := make(chan forkResult, 1)
	f.reqs <- forkReq{path, args, attr, done}
	r := <-done
	return r.pid, r.err
}

// limitProcesses sets RLIMIT_NPROC (soft and hard) to n. It counts every
// task of the agent's user, zombies included until they are reaped. The
// agent must hold CAP_SYS_RESOURCE (it is then exempt, as its own threads
// must be) and starts commands without it (see forker).
func limitProcesses(n int64) error {
	var caps unix.CapUserHeader
	caps.Version = unix.LINUX_CAPABILITY_VERSION_3
	var data [2]unix.CapUserData
	if err := unix.Capget(&caps, &data[0]); err != nil {
		return fmt.Errorf("agent: capget: %w", err)
	}
	if data[unix.CAP_SYS_RESOURCE/32].Effective&(1<<(unix.CAP_SYS_RESOURCE%32)) == 0 {
		return fmt.Errorf("agent: a process limit needs CAP_SYS_RESOURCE in the agent's effective set (it would bind the agent's own threads)")
	}
	lim := unix.Rlimit{Cur: uint64(n), Max: uint64(n)}
	if err := unix.Setrlimit(unix.RLIMIT_NPROC, &lim); err != nil {
		return fmt.Errorf("agent: set RLIMIT_NPROC: %w", err)
	}
	return nil
}

// dropCap drops capability c from the calling thread's bounding,
// inheritable and ambient sets, so that nothing it executes gets c back
// (a root command's permitted set is its bounding set plus the
// inheritable one). The thread keeps c in its effective set, unused.
func dropCap(c int) error {
	if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
		return err
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_LOWER, uintptr(c), 0, 0); err != nil && err != unix.EINVAL {
		return err
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return err
	}
	if data[c/32].Inheritable&(1<<(c%32)) == 0 {
		return nil
	}
	data[c/32].Inheritable &^= 1 << (c % 32)
	return unix.Capset(&hdr, &data[0])
}
