package runc

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"strconv"
	"time"
)

// namespaceKinds are the namespaces of this process that starting,
// pausing and stopping sandboxes must leave as they were.
var namespaceKinds = []string{"mnt", "pid", "net", "uts", "ipc", "user", "cgroup"}

// hostNS holds the namespaces of the process's main thread when this
// package was initialised, before main (or any sandbox) ran.
var hostNS = readNamespaces("/proc/self")

// init keeps every goroutine but main off the main thread.
//
// libcontainer serves each new container's mount requests from a
// goroutine that locks its thread, joins the container's mount namespace
// with setns(2) and exits without unlocking, so that the Go runtime ends
// the thread with it. The runtime cannot end the main thread: a goroutine
// that exits locked to it leaves it parked for the life of the process,
// still in that container's mount namespace, and the kernel answers
// /proc/self (root, mountinfo, mounts, ns/mnt) for the main thread. Such
// a goroutine lands on the main thread whenever the scheduler finds it
// idle. Locking the main goroutine to the main thread here, before main
// runs, leaves the scheduler no other goroutine to put there (Go runs
// main on the thread an init function locked).
func init() { runtime.LockOSThread() }

// readNamespaces returns the namespace links (kind -> "mnt:[4026531841]")
// of a /proc/<pid> or /proc/<pid>/task/<tid> directory; kinds that
// cannot be read are absent.
func readNamespaces(dir string) map[string]string {
	ns := make(map[string]string, len(namespaceKinds))
	for _, k := range namespaceKinds {
		if l, err := os.Readlink(dir + "/ns/" + k); err == nil {
			ns[k] = l
		}
	}
	return ns
}

// checkMainThread returns an error if this process's main thread is no
// longer in the namespaces it started in.
func checkMainThread() error {
	now := readNamespaces("/proc/self")
	for _, k := range namespaceKinds {
		if now[k] != hostNS[k] {
			return fmt.Errorf("runc: this process's main thread is in %s, not %s where it started: a goroutine changed namespace on it and ended locked to it; the main goroutine must stay locked to the main thread (see Init)", now[k], hostNS[k])
		}
	}
	return nil
}

// foreignThreadWait bounds how long Start waits for libcontainer's
// helper threads in a new sandbox's namespaces to end.
const foreignThreadWait = 5 * time.Second

// waitThreadsLeft waits until no thread of this process is in a namespace
// of the process pid (a sandbox's init) that is not the host's: after
// Start returns, nothing of the embedding process runs inside a sandbox.
// It returns an error naming a thread still there after
// foreignThreadWait, or if the main thread left the host's namespaces.
func waitThreadsLeft(pid int) error {
	theirs := readNamespaces(fmt.Sprintf("/proc/%d", pid))
	for k, l := range theirs {
		if hostNS[k] == l {
			delete(theirs, k) // shared with the host (user, cgroup, net with NetworkHost)
		}
	}
	deadline := time.Now().Add(foreignThreadWait)
	delay := 100 * time.Microsecond
	for {
		tid, kind, err := threadIn(theirs)
		if err != nil {
			return err
		}
		if tid == "" || tid == strconv.Itoa(os.Getpid()) {
			// The main thread never comes back from a sandbox's namespace.
			return checkMainThread()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("runc: thread %s of this process is still in the sandbox's %s namespace after %v", tid, kind, foreignThreadWait)
		}
		time.Sleep(delay)
		delay = min(2*delay, 10*time.Millisecond)
	}
}

// threadIn returns a thread of this process in one of the namespaces ns
// (kind -> link) and that namespace's kind, or "" if there is none.
func threadIn(ns map[string]string) (tid, kind string, err error) {
	if len(ns) == 0 {
		return "", "", nil
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return "", "", fmt.Errorf("runc: listing this process's threads: %w", err)
	}
	for _, t := range tasks {
		for k, l := range ns {
			cur, err := os.Readlink("/proc/self/task/" + t.Name() + "/ns/" + k)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return "", "", fmt.Errorf("runc: thread %s: %w", t.Name(), err)
			}
			if err == nil && cur == l {
				return t.Name(), k, nil
			}
		}
	}
	return "", "", nil
}
