package benchmarks

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"time"

	"github.com/turnbox/turnbox/container/gvisor"
	"github.com/turnbox/turnbox/container/runc"
	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/snapshot/btrfs"
	"github.com/turnbox/turnbox/zfs"
)

// Result is one measured operation.
type Result struct {
	Op       string  `json:"op"`
	Backend  string  `json:"backend"`
	Runtime  string  `json:"runtime"`
	Files    int     `json:"files"`
	N        int     `json:"n"`
	P50MS    float64 `json:"p50_ms"`
	P90MS    float64 `json:"p90_ms"`
	P99MS    float64 `json:"p99_ms"`
	Baseline string  `json:"baseline"`
	// Sessions is the number of sessions driven concurrently (0 or 1:
	// one at a time).
	Sessions int `json:"sessions,omitempty"`
	// OpsPerSec is the sustained throughput of a load run (0 when the
	// result is a latency series only).
	OpsPerSec float64 `json:"ops_per_s,omitempty"`
}

// Report is a whole run.
type Report struct {
	Results []Result `json:"results"`
	Machine Machine  `json:"machine"`
}

// Machine describes where a report was measured.
type Machine struct {
	OS     string    `json:"os"`
	Arch   string    `json:"arch"`
	CPUs   int       `json:"cpus"`
	Kernel string    `json:"kernel"`
	When   time.Time `json:"when"`
}

// Config says what to measure.
type Config struct {
	// Files is the synthetic workspace's file count for snapshot,
	// rollback, fork and full-copy.
	Files int
	// FileSize is the size of each file (default 10 KiB: 10,000 files make
	// 100 MB).
	FileSize int
	// N is the number of timed runs of each operation.
	N int
}

// Latencies turns samples into a Result's percentiles (nearest rank).
func Latencies(op string, samples []time.Duration) Result {
	s := append([]time.Duration(nil), samples...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	pct := func(p float64) float64 {
		if len(s) == 0 {
			return 0
		}
		i := int(p*float64(len(s))+0.999999) - 1
		return float64(s[min(max(i, 0), len(s)-1)].Nanoseconds()) / 1e6
	}
	return Result{Op: op, N: len(s), P50MS: pct(0.50), P90MS: pct(0.90), P99MS: pct(0.99)}
}

// Fill writes files files of size bytes under dir, 100 to a directory.
func Fill(dir string, files, size int) error {
	buf := make([]byte, size)
	for i := range files {
		sub := filepath.Join(dir, fmt.Sprintf("d%03d", i/100))
		if i%100 == 0 {
			if err := os.MkdirAll(sub, 0o755); err != nil {
				return err
			}
		}
		_, _ = rand.Read(buf)
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%05d.txt", i)), buf, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return ""
	}
	return string(b[:max(len(b)-1, 0)])
}

// NewReport returns an empty report stamped with this machine.
func NewReport() Report {
	return Report{Results: []Result{}, Machine: Machine{OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(), Kernel: kernel(), When: time.Now().UTC()}}
}

func timeN(n int, fn func(i int) error) ([]time.Duration, error) {
	out := make([]time.Duration, 0, n)
	for i := range n {
		start := time.Now()
		if err := fn(i); err != nil {
			return nil, err
		}
		out = append(out, time.Since(start))
	}
	return out, nil
}

func bashReq(id, cmd string) environment.ToolRequest {
	r, _ := environment.NewToolRequest(id, environment.BashParams{Command: cmd})
	return r
}

// Run measures the headline operations on h and returns their results,
// followed by the baselines measured in the same run.
func Run(ctx context.Context, h *embedded.Host, cfg Config) ([]Result, error) {
	if cfg.N <= 0 {
		cfg.N = 30
	}
	if cfg.FileSize <= 0 {
		cfg.FileSize = 10 << 10
	}
	caps := h.Capabilities()
	var results []Result
	add := func(op, baseline string, files int, samples []time.Duration) {
		r := Latencies(op, samples)
		r.Backend, r.Runtime, r.Files, r.Baseline = caps.Storage, string(caps.Isolation), files, baseline
		results = append(results, r)
	}

	// create: a new session on an empty workspace, until it can run tools.
	var created []*embedded.Environment
	samples, err := timeN(cfg.N, func(int) error {
		e, err := h.CreateSession(ctx, environment.SessionConfig{})
		created = append(created, e)
		return err
	})
	for _, e := range created {
		if e != nil {
			_ = e.Destroy(ctx)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("bench create: %w", err)
	}
	add("create", "", 0, samples)

	env, err := h.CreateSession(ctx, environment.SessionConfig{})
	if err != nil {
		return nil, err
	}
	defer env.Destroy(context.WithoutCancel(ctx))
	info, err := h.Session(env.SessionID())
	if err != nil {
		return nil, err
	}
	if err := Fill(info.Path, cfg.Files, cfg.FileSize); err != nil {
		return nil, fmt.Errorf("bench: filling workspace: %w", err)
	}

	// exec: a bash `true` round trip.
	if samples, err = timeN(cfg.N, func(i int) error {
		_, err := env.ExecuteTool(ctx, bashReq(fmt.Sprint("x", i), "true"), nil)
		return err
	}); err != nil {
		return nil, fmt.Errorf("bench exec: %w", err)
	}
	add("exec", "", cfg.Files, samples)
	if rt, ok := h.Runtime().(*gvisor.Runtime); ok {
		rootfs, err := h.ImagePath("")
		if err != nil {
			return nil, err
		}
		base, err := RunscBaselines(ctx, rt, env.SessionID(), rootfs, info.Path, cfg.N)
		if err != nil {
			return nil, fmt.Errorf("bench runsc baselines: %w", err)
		}
		for _, r := range base {
			r.Backend, r.Runtime, r.Files = caps.Storage, string(caps.Isolation), cfg.Files
			results = append(results, r)
		}
	}
	if rt, ok := h.Runtime().(*runc.Runtime); ok {
		rootfs, err := h.ImagePath("")
		if err != nil {
			return nil, err
		}
		base, err := RuncBaselines(ctx, rt, rootfs, info.Path, cfg.N)
		if err != nil && !errors.Is(err, ErrNoRuncBinary) {
			return nil, fmt.Errorf("bench runc baseline: %w", err)
		}
		for _, r := range base {
			r.Backend, r.Runtime, r.Files = caps.Storage, string(caps.Isolation), cfg.Files
			results = append(results, r)
		}
	}

	// read_file of a small file.
	readReq, _ := environment.NewToolRequest("r", environment.ReadFileParams{Path: "d000/f00000.txt", Limit: 1})
	if samples, err = timeN(cfg.N, func(int) error {
		_, err := env.ExecuteTool(ctx, readReq, nil)
		return err
	}); err != nil {
		return nil, fmt.Errorf("bench read_file: %w", err)
	}
	add("read_file", "", cfg.Files, samples)

	// snapshot (a turn): one small change between snapshots, as a turn has.
	var snaps []string
	samples = samples[:0]
	for i := range cfg.N {
		w, _ := environment.NewToolRequest("w", environment.WriteFileParams{Path: "turn.txt", Content: fmt.Sprint(i)})
		if _, err := env.ExecuteTool(ctx, w, nil); err != nil {
			return nil, err
		}
		start := time.Now()
		s, err := env.TurnComplete(ctx, "")
		if err != nil {
			return nil, fmt.Errorf("bench snapshot: %w", err)
		}
		samples = append(samples, time.Since(start))
		snaps = append(snaps, s.ID)
	}
	add("snapshot", "", cfg.Files, samples)

	// rollback: alternate between the first and the last snapshot, so each
	// rollback really changes the tree.
	if samples, err = timeN(cfg.N, func(i int) error {
		target := snaps[0]
		if i%2 == 1 {
			target = snaps[len(snaps)-1]
		}
		return env.Rollback(ctx, target)
	}); err != nil {
		return nil, fmt.Errorf("bench rollback: %w", err)
	}
	add("rollback", "", cfg.Files, samples)

	// fork: a new session from a snapshot, until it can run tools.
	var forks []environment.Environment
	samples, err = timeN(cfg.N, func(int) error {
		f, err := env.Fork(ctx, snaps[0], environment.SessionConfig{})
		forks = append(forks, f)
		return err
	})
	for _, f := range forks {
		if f != nil {
			_ = f.Destroy(ctx)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("bench fork: %w", err)
	}
	add("fork", "", cfg.Files, samples)

	// Baseline: a plain recursive copy of the same workspace.
	info, _ = h.Session(env.SessionID())
	tmp, err := os.MkdirTemp(filepath.Dir(filepath.Dir(info.Path)), ".bench-copy-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	samples = samples[:0]
	for i := range cfg.N {
		dst := filepath.Join(tmp, fmt.Sprint(i))
		start := time.Now()
		if out, err := exec.CommandContext(ctx, "cp", "-a", info.Path, dst).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("bench full-copy: %v: %s", err, out)
		}
		samples = append(samples, time.Since(start))
		_ = os.RemoveAll(dst)
	}
	add("snapshot", "full-copy", cfg.Files, samples)

	// Baseline: the bare backend operations on a tree of the same shape.
	var raw []Result
	switch b := h.Storage().(type) {
	case *btrfs.Backend:
		raw, err = RawBtrfs(ctx, b.Root(), cfg.Files, cfg.FileSize, cfg.N)
	case *zfs.Backend:
		raw, err = RawZFS(ctx, b.Parent(), tmp, cfg.Files, cfg.FileSize, cfg.N)
	}
	if err != nil {
		return nil, fmt.Errorf("bench raw baseline: %w", err)
	}
	for _, r := range raw {
		r.Backend, r.Runtime, r.Files, r.Baseline = caps.Storage, string(caps.Isolation), cfg.Files, "raw"
		results = append(results, r)
	}
	return results, nil
}
