// Package hoststate records the namespaces and root of every thread of the
// calling process and checks later that none of them moved, for tests that
// must prove a container runtime leaves the embedding process as it found
// it. It also finds what a sandbox may leave behind on the host: mounts
// under a directory and cgroups.
package hoststate

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/moby/sys/mountinfo"
)

// NamespaceKinds are the namespaces recorded, by their name in
// /proc/<pid>/ns.
var NamespaceKinds = []string{"mnt", "pid", "net", "uts", "ipc", "user", "cgroup"}

// State is what Capture recorded: the process's namespaces, the id of its
// root mount and a host file that every thread must see.
type State struct {
	ns        map[string]string // kind -> "mnt:[4026531841]"
	rootMount int               // mount id of "/" in the original mount namespace
	marker    string            // host file path
	markerIno uint64
}

// Capture records the namespaces of the calling process and checks that
// every thread is in them now (a process that is already inconsistent
// cannot be a baseline). marker is an existing host file (say, one the
// test made in its temporary directory) that every thread must see at the
// same path.
func Capture(marker string) (*State, error) {
	s := &State{ns: map[string]string{}, marker: marker}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for _, k := range NamespaceKinds {
		l, err := os.Readlink("/proc/thread-self/ns/" + k)
		if err != nil {
			return nil, fmt.Errorf("hoststate: %w", err)
		}
		s.ns[k] = l
	}
	id, err := rootMountID("/proc/thread-self/mountinfo")
	if err != nil {
		return nil, err
	}
	s.rootMount = id
	ino, err := inode(marker)
	if err != nil {
		return nil, fmt.Errorf("hoststate: marker: %w", err)
	}
	s.markerIno = ino
	if err := s.Check(); err != nil {
		return nil, fmt.Errorf("hoststate: the process is not consistent to begin with: %w", err)
	}
	return s, nil
}

// Check returns an error naming every thread of the process (and the
// process itself, /proc/self, which the kernel answers for the main
// thread) that is not in the recorded namespaces, whose root is not the
// host's "/", whose mount table's root is not the original one or that
// does not see the marker file. Threads that exit while being checked are
// skipped.
func (s *State) Check() error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return fmt.Errorf("hoststate: %w", err)
	}
	var errs []error
	for _, t := range tasks {
		if err := s.checkDir("/proc/self/task/" + t.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("thread %s: %w", t.Name(), err))
		}
	}
	if err := s.checkDir("/proc/self"); err != nil {
		errs = append(errs, fmt.Errorf("process (/proc/self): %w", err))
	}
	return errors.Join(errs...)
}

// checkDir checks one /proc/<pid> or /proc/<pid>/task/<tid> directory.
func (s *State) checkDir(dir string) error {
	var errs []error
	for _, k := range NamespaceKinds {
		l, err := os.Readlink(dir + "/ns/" + k)
		if err != nil {
			return err
		}
		if l != s.ns[k] {
			errs = append(errs, fmt.Errorf("%s namespace %s, want %s", k, l, s.ns[k]))
		}
	}
	root, err := os.Readlink(dir + "/root")
	if err != nil {
		return err
	}
	if root != "/" {
		errs = append(errs, fmt.Errorf("root is %q, want \"/\"", root))
	}
	id, err := rootMountID(dir + "/mountinfo")
	if err != nil {
		return err
	}
	if id != s.rootMount {
		errs = append(errs, fmt.Errorf("mount table's root is mount %d, want %d (another mount namespace's table)", id, s.rootMount))
	}
	if ino, err := inode(dir + "/root" + s.marker); err != nil || ino != s.markerIno {
		errs = append(errs, fmt.Errorf("host file %s not visible through its root (inode %d, %v)", s.marker, ino, err))
	}
	return errors.Join(errs...)
}

// rootMountID returns the mount id of the mount at "/" in a mountinfo file
// (the last one, if mounts are stacked there).
func rootMountID(file string) (int, error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	ms, err := mountinfo.GetMountsFromReader(f, mountinfo.SingleEntryFilter("/"))
	if err != nil {
		return 0, fmt.Errorf("hoststate: %s: %w", file, err)
	}
	if len(ms) == 0 {
		return 0, fmt.Errorf("hoststate: %s: no mount at /", file)
	}
	return ms[len(ms)-1].ID, nil
}

func inode(p string) (uint64, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("hoststate: no inode for %s", p)
	}
	return st.Ino, nil
}

// MountsUnder returns the mount points, in the calling thread's mount
// namespace, at or below any of dirs (each cleaned, symlinks not
// resolved), and those whose source directory inside its filesystem
// mentions one of names (a sandbox id, say).
func MountsUnder(dirs []string, names ...string) ([]string, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	f, err := os.Open("/proc/thread-self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ms, err := mountinfo.GetMountsFromReader(f, nil)
	if err != nil {
		return nil, fmt.Errorf("hoststate: %w", err)
	}
	var out []string
	for _, m := range ms {
		if below(m.Mountpoint, dirs) || mentions(m.Root, names) {
			out = append(out, m.Mountpoint)
		}
	}
	return out, nil
}

func below(p string, dirs []string) bool {
	for _, d := range dirs {
		d = filepath.Clean(d)
		if p == d || strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

func mentions(p string, names []string) bool {
	for _, n := range names {
		if n != "" && strings.Contains(p, n) {
			return true
		}
	}
	return false
}

// CgroupsNamed returns the cgroup directories under /sys/fs/cgroup (every
// hierarchy) whose name contains one of names.
func CgroupsNamed(names ...string) ([]string, error) {
	var out []string
	err := filepath.WalkDir("/sys/fs/cgroup", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking
			}
			return err
		}
		if d.IsDir() && mentions(d.Name(), names) {
			out = append(out, p)
			return fs.SkipDir
		}
		return nil
	})
	return out, err
}

// ProcessesMentioning returns "pid: cmdline" of every host process whose
// command line contains one of names.
func ProcessesMentioning(names ...string) ([]string, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		cmd := strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " ")
		if mentions(cmd, names) {
			out = append(out, e.Name()+": "+cmd)
		}
	}
	return out, nil
}

// Children returns "pid: cmdline" of every live process whose parent is
// the calling process.
func Children() ([]string, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	self := os.Getpid()
	var out []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		i := strings.LastIndexByte(string(b), ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(self) || f[0] == "Z" {
			continue
		}
		cmd, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		out = append(out, e.Name()+": "+strings.ReplaceAll(strings.TrimRight(string(cmd), "\x00"), "\x00", " "))
	}
	return out, nil
}

// Baseline captures the state of the calling test's process, with a
// marker file in a temporary directory of t, and returns a function that
// fails t (Fatalf) if the process is no longer in that state after step.
func Baseline(t testing.TB) (check func(step string)) {
	t.Helper()
	marker := filepath.Join(t.TempDir(), "host-marker")
	if err := os.WriteFile(marker, []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}
	before, err := Capture(marker)
	if err != nil {
		t.Fatal(err)
	}
	return func(step string) {
		t.Helper()
		if err := before.Check(); err != nil {
			t.Fatalf("after %s, this process left its namespaces:\n%v", step, err)
		}
	}
}
