package runc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/cgroups"
)

// cgroupPath is the cgroup (relative to each hierarchy's root) that holds
// everything of sandbox id.
func (r *Runtime) cgroupPath(id string) string {
	return filepath.Join(r.cgroupParent, id)
}

// containerCgroup is the cgroup libcontainer manages for sandbox id: a
// child of cgroupPath(id), so that limits set on cgroupPath(id) bind the
// sandbox even where the sandbox can write its own cgroup's files (the
// pids hierarchy, see pidsSetup).
func (r *Runtime) containerCgroup(id string) string {
	return filepath.Join(r.cgroupPath(id), "sandbox")
}

// agentPidsReserve is how many pids (processes and threads) the agent may
// use beyond Limits.Pids: the agent confines commands to Limits.Pids in a
// child cgroup, so a fork bomb cannot take the threads its Go runtime
// needs.
const agentPidsReserve = 64

// pidsSetup prepares the pids hierarchy of a sandbox with a pids limit:
// cgroupPath(id) gets pids.max = limit + agentPidsReserve, and the
// container's own pids cgroup is made now so that it can be bound into the
// sandbox (the agent makes its command cgroup below it). It returns the
// host directory of the container's pids cgroup.
func (r *Runtime) pidsSetup(id string, limit int64) (string, error) {
	outer := filepath.Join("/sys/fs/cgroup/pids", r.cgroupPath(id))
	inner := filepath.Join("/sys/fs/cgroup/pids", r.containerCgroup(id))
	if err := os.MkdirAll(inner, 0o755); err != nil {
		return "", err
	}
	max := strconv.FormatInt(limit+agentPidsReserve, 10)
	if err := os.WriteFile(filepath.Join(outer, "pids.max"), []byte(max), 0); err != nil {
		return "", err
	}
	return inner, nil
}

// cgroupDirs returns the existing directories of a cgroup path in every
// mounted hierarchy (v1 controllers and the unified one).
func cgroupDirs(rel string) []string {
	var dirs []string
	if cgroups.IsCgroup2UnifiedMode() {
		d := filepath.Join("/sys/fs/cgroup", rel)
		if _, err := os.Stat(d); err == nil {
			dirs = append(dirs, d)
		}
		return dirs
	}
	entries, err := os.ReadDir("/sys/fs/cgroup")
	if err != nil {
		return nil
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		d := filepath.Join("/sys/fs/cgroup", e.Name(), rel)
		if _, err := os.Stat(d); err == nil {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// cgroupIDs lists the sandbox ids that have a cgroup under the parent.
func (r *Runtime) cgroupIDs() []string {
	seen := map[string]bool{}
	var ids []string
	for _, d := range cgroupDirs(r.cgroupParent) {
		entries, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if e.IsDir() && validID(e.Name()) && !seen[e.Name()] {
				seen[e.Name()] = true
				ids = append(ids, e.Name())
			}
		}
	}
	return ids
}

// removeCgroups kills every process left in sandbox id's cgroups (thawing
// a frozen one first) and removes the cgroups, deepest first.
func (r *Runtime) removeCgroups(ctx context.Context, id string) error {
	dirs := cgroupDirs(r.cgroupPath(id))
	for _, d := range dirs {
		// A frozen v1 cgroup holds SIGKILL until thawed.
		_ = os.WriteFile(filepath.Join(d, "freezer.state"), []byte("THAWED"), 0)
		_ = os.WriteFile(filepath.Join(d, "cgroup.freeze"), []byte("0"), 0)
		_ = os.WriteFile(filepath.Join(d, "cgroup.kill"), []byte("1"), 0)
	}
	var errs []error
	for _, d := range dirs {
		if err := removeCgroupTree(ctx, d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeCgroupTree kills the processes of the cgroup at dir and its
// children and removes them, retrying while killed processes exit.
func removeCgroupTree(ctx context.Context, dir string) error {
	var subdirs []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			subdirs = append(subdirs, p)
		}
		return nil
	})
	for i := len(subdirs) - 1; i >= 0; i-- {
		d := subdirs[i]
		var err error
		for try := 0; try < 100; try++ {
			killProcs(d)
			if err = os.Remove(d); err == nil || errors.Is(err, fs.ErrNotExist) {
				err = nil
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(try+1) * time.Millisecond):
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// killProcs sends SIGKILL to every process listed in dir/cgroup.procs.
func killProcs(dir string) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if pid, err := strconv.Atoi(strings.TrimSpace(sc.Text())); err == nil && pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
