package cgroup

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Root is where the cgroup hierarchies are mounted.
const Root = "/sys/fs/cgroup"

// Dir returns the directory of the cgroup process pid is in for
// controller (e.g. "memory", "freezer"), and whether it is on the v2
// hierarchy. A v1 hierarchy with the controller wins; otherwise the v2
// cgroup is returned when its directory has a file named probe (e.g.
// "memory.events", "cgroup.freeze"), at Root or at Root/unified.
func Dir(pid int, controller, probe string) (dir string, v2 bool, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return "", false, fmt.Errorf("cgroup: %w", err)
	}
	var v2path string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			v2path = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == controller {
				d := filepath.Join(Root, controller, parts[2])
				if _, err := os.Stat(d); err == nil {
					return d, false, nil
				}
			}
		}
	}
	if v2path != "" && v2path != "/" {
		for _, base := range []string{Root, filepath.Join(Root, "unified")} {
			d := filepath.Join(base, v2path)
			if _, err := os.Stat(filepath.Join(d, probe)); err == nil {
				return d, true, nil
			}
		}
	}
	return "", false, fmt.Errorf("cgroup: no %s cgroup for pid %d", controller, pid)
}

// OOMKills returns the number of OOM kills the memory cgroup at dir has
// recorded (v2 memory.events or v1 memory.oom_control, line "oom_kill"),
// or -1 if dir is "" or the count cannot be read.
func OOMKills(dir string) int64 {
	if dir == "" {
		return -1
	}
	for _, name := range []string{"memory.events", "memory.oom_control"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
				n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				if err != nil {
					return -1
				}
				return n
			}
		}
	}
	return -1
}
