package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// pidsCgroup confines commands to a pids cgroup (v1 hierarchy) without a
// window in which a new command runs outside it: the forking thread moves
// itself into the cgroup, forks, and moves back. In cgroup v1 membership
// is per thread, and a child starts in its parent thread's cgroup.
type pidsCgroup struct {
	tasks     string // the limited cgroup's tasks file
	homeTasks string // the agent's own cgroup's tasks file
}

// setupPidsCgroup creates a child of the agent's pids cgroup named
// turnbox-exec with pids.max = limit.
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
	if err := os.WriteFile(filepath.Join(dir, "pids.max"), []byte(strconv.FormatInt(limit, 10)), 0); err != nil {
		return nil, fmt.Errorf("agent: set pids.max: %w", err)
	}
	return &pidsCgroup{tasks: filepath.Join(dir, "tasks"), homeTasks: filepath.Join(home, "tasks")}, nil
}

// forkExec runs syscall.ForkExec from a thread inside the cgroup.
func (c *pidsCgroup) forkExec(path string, args []string, attr *syscall.ProcAttr) (int, error) {
	runtime.LockOSThread()
	tid := []byte(strconv.Itoa(syscall.Gettid()))
	if err := os.WriteFile(c.tasks, tid, 0); err != nil {
		runtime.UnlockOSThread()
		return 0, fmt.Errorf("enter pids cgroup: %w", err)
	}
	pid, err := syscall.ForkExec(path, args, attr)
	if werr := os.WriteFile(c.homeTasks, tid, 0); werr != nil {
		// The thread stays confined; let it die with the goroutine
		// rather than return it to the pool.
		return pid, err
	}
	runtime.UnlockOSThread()
	return pid, err
}
