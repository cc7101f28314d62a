package gvisor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/moby/sys/mountinfo"

	"github.com/turnbox/turnbox/container/cgroup"
)

// hierarchies returns the mount points of every cgroup hierarchy (v1
// controllers and the v2 unified one), or nil if the mount table cannot
// be read.
func hierarchies() []string {
	mounts, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup", "cgroup2"))
	if err != nil {
		return nil
	}
	out := make([]string, 0, len(mounts))
	for _, m := range mounts {
		out = append(out, m.Mountpoint)
	}
	return out
}

// removeCgroup removes the directory cg (a path relative to the hierarchy
// roots) from every hierarchy, retrying while processes leave it.
func removeCgroup(cg string) error {
	var errs []error
	for _, h := range hierarchies() {
		dir := filepath.Join(h, cg)
		var err error
		for i := 0; i < 100; i++ {
			err = os.Remove(dir)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				err = nil
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("gvisor: remove cgroup: %w", err))
		}
		// Remove the parent too once it is empty; ignore failures (another
		// sandbox of this root may still use it).
		_ = os.Remove(filepath.Dir(dir))
	}
	return errors.Join(errs...)
}

// leakedCgroups lists cgroup paths under parent in any hierarchy, plus
// empty runsc-* cgroups runsc leaves at hierarchy roots when a run is
// killed.
func leakedCgroups(parent string) []string {
	seen := map[string]bool{}
	var out []string
	for _, h := range hierarchies() {
		for _, pattern := range []string{filepath.Join(h, parent, "*"), filepath.Join(h, "runsc-*")} {
			matches, _ := filepath.Glob(pattern)
			for _, m := range matches {
				fi, err := os.Stat(m)
				if err != nil || !fi.IsDir() {
					continue
				}
				rel := strings.TrimPrefix(m, h)
				if strings.HasPrefix(filepath.Base(rel), "runsc-") && !cgroupEmpty(m) {
					continue
				}
				if !seen[rel] {
					seen[rel] = true
					out = append(out, rel)
				}
			}
		}
	}
	return out
}

func cgroupEmpty(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	return err == nil && len(strings.TrimSpace(string(b))) == 0
}

// freezer freezes and thaws one cgroup, v1 (freezer.state) or v2
// (cgroup.freeze).
type freezer struct {
	v2   bool
	file string
}

// findFreezer returns the freezer of the cgroup process pid is in, or an
// error if there is none.
func findFreezer(pid int) (*freezer, error) {
	dir, v2, err := cgroup.Dir(pid, "freezer", "cgroup.freeze")
	if err != nil {
		return nil, err
	}
	if v2 {
		return &freezer{v2: true, file: filepath.Join(dir, "cgroup.freeze")}, nil
	}
	return &freezer{file: filepath.Join(dir, "freezer.state")}, nil
}

// set freezes (true) or thaws (false) and waits until the kernel reports
// the new state.
func (f *freezer) set(frozen bool) error {
	var want, read string
	if f.v2 {
		want = map[bool]string{true: "1", false: "0"}[frozen]
	} else {
		want = map[bool]string{true: "FROZEN", false: "THAWED"}[frozen]
	}
	if err := os.WriteFile(f.file, []byte(want), 0); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if f.v2 {
			events, err := os.ReadFile(filepath.Join(filepath.Dir(f.file), "cgroup.events"))
			if err != nil {
				return err
			}
			read = "0"
			if strings.Contains(string(events), "frozen 1") {
				read = "1"
			}
		} else {
			b, err := os.ReadFile(f.file)
			if err != nil {
				return err
			}
			read = strings.TrimSpace(string(b))
		}
		if read == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup freezer stuck in %s, want %s", read, want)
		}
		time.Sleep(200 * time.Microsecond)
	}
}
