package main

import (
	"fmt"
	"strconv"

	"github.com/spf13/pflag"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/environment"
)

// limitFlags are the resource limit flags, of the host (global flags:
// empty is the host's default, "none" no limit) or of one session
// (session create: empty is the host's, and a value may only lower it).
type limitFlags struct {
	memory, cpus, pids, disk string
	suffix                   string // of the flags' names
	diskFlag                 string // the disk flag's name
}

// add registers the flags on fs as memory<suffix>, cpus<suffix> and
// pids<suffix>; what says whose limits they are.
func (l *limitFlags) add(fs *pflag.FlagSet, suffix, what, def string) {
	l.suffix = suffix
	fs.StringVar(&l.memory, "memory"+suffix, "", what+" memory limit, e.g. 512M or 2G ("+def+")")
	fs.StringVar(&l.cpus, "cpus"+suffix, "", what+" CPU limit in cores, e.g. 0.5 ("+def+")")
	fs.StringVar(&l.pids, "pids"+suffix, "", what+" limit on processes and threads ("+def+")")
}

// limitValue parses one flag: "" is 0 (the default), "none" (when
// allowed) -1 (no limit), else parse's value, which must be positive.
func limitValue[T int64 | float64](flag, s string, none bool, parse func(string) (T, error)) (T, error) {
	switch {
	case s == "":
		return 0, nil
	case s == "none" && none:
		return -1, nil
	}
	v, err := parse(s)
	if err != nil || !(v > 0) {
		return 0, fmt.Errorf("--%s %q: want a positive value%s", flag, s, map[bool]string{true: " or none", false: ""}[none])
	}
	return v, nil
}

func parseCount(s string) (int64, error)  { return strconv.ParseInt(s, 10, 64) }
func parseCPUs(s string) (float64, error) { return strconv.ParseFloat(s, 64) }

// parse converts the flags; none says whether "none" is allowed.
func (l *limitFlags) parse(none bool) (environment.Limits, error) {
	var out environment.Limits
	var err error
	if out.MemoryBytes, err = limitValue("memory"+l.suffix, l.memory, none, parseSize); err != nil {
		return out, err
	}
	if out.CPUs, err = limitValue("cpus"+l.suffix, l.cpus, none, parseCPUs); err != nil {
		return out, err
	}
	if out.Pids, err = limitValue("pids"+l.suffix, l.pids, none, parseCount); err != nil {
		return out, err
	}
	if out.DiskBytes, err = limitValue(l.diskFlag, l.disk, none, parseSize); err != nil {
		return out, err
	}
	return out, nil
}

// hostLimits converts the global flags to the host's configuration.
func (l *limitFlags) hostLimits() (container.Limits, int64, error) {
	v, err := l.parse(true)
	if err != nil {
		return container.Limits{}, 0, err
	}
	return container.Limits{MemoryBytes: v.MemoryBytes, CPUs: v.CPUs, Pids: v.Pids}, v.DiskBytes, nil
}
