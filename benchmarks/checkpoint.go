package benchmarks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/gvisor"
)

// GVisorCheckpointRestore measures gVisor's own way of saving and going
// back to a sandbox, for comparison with turn_complete and rollback: it
// runs a sandbox (a `sleep` in rootfs, which must hold busybox or another
// /bin/sleep) with rt's runsc flags, then n times
// `runsc checkpoint --leave-running` ("gvisor-checkpoint", under
// turn_complete) and n times `runsc restore --detach` of that image into a
// new sandbox ("gvisor-restore", under rollback). Each restored sandbox is
// removed untimed. Everything lives under rt.Root() and is removed before
// it returns.
func GVisorCheckpointRestore(ctx context.Context, rt *gvisor.Runtime, rootfs string, n int) (_ []Result, err error) {
	dir, err := os.MkdirTemp(rt.Root(), ".bench-ckpt-")
	if err != nil {
		return nil, fmt.Errorf("gvisor checkpoint baseline: %w", err)
	}
	defer os.RemoveAll(dir)
	bundle := filepath.Join(dir, "bundle")
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		return nil, err
	}
	if err := writeSleepSpec(bundle, rootfs); err != nil {
		return nil, err
	}
	// Ids are never a prefix of one another: runsc matches ids by prefix.
	tag := fmt.Sprintf("bench%d", os.Getpid())
	src := tag + "-ckpt-src"
	runsc := func(ctx context.Context, args ...string) error {
		cmd := exec.CommandContext(ctx, rt.Runsc(), rt.RunscArgs(container.NetworkNone, args...)...)
		// A detached sandbox keeps its stdio: give it /dev/null, never a
		// pipe of ours, or Output would wait for the sandbox to exit.
		cmd.Stdin, cmd.Stdout = nil, nil
		logf, err := os.CreateTemp(dir, "runsc-*.log")
		if err != nil {
			return err
		}
		defer logf.Close()
		cmd.Stderr = logf
		if err := cmd.Run(); err != nil {
			b, _ := os.ReadFile(logf.Name())
			return fmt.Errorf("runsc %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(b)))
		}
		return nil
	}
	remove := func(id string) error {
		ctx := context.WithoutCancel(ctx)
		_ = runsc(ctx, "kill", id, "KILL")
		return runsc(ctx, "delete", "-force", id)
	}
	if err := runsc(ctx, "run", "--detach", "--bundle", bundle, src); err != nil {
		return nil, fmt.Errorf("gvisor checkpoint baseline: %w", err)
	}
	defer func() { err = errors.Join(err, remove(src)) }()

	image := filepath.Join(dir, "image")
	ckpt, err := measure(ctx, n, func(ctx context.Context, i int, l *lap) error {
		img := filepath.Join(dir, fmt.Sprintf("img%d", i))
		if i == 0 {
			img = image // kept for the restores
		}
		l.Start()
		err := runsc(ctx, "checkpoint", "--image-path", img, "--leave-running", src)
		l.Stop()
		if err != nil {
			return err
		}
		if i > 0 {
			return os.RemoveAll(img)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("gvisor checkpoint baseline: %w", err)
	}
	restore, err := measure(ctx, n, func(ctx context.Context, i int, l *lap) error {
		id := fmt.Sprintf("%s-restore-%dx", tag, i)
		l.Start()
		err := runsc(ctx, "restore", "--detach", "--image-path", image, "--bundle", bundle, id)
		l.Stop()
		if err != nil {
			_ = remove(id)
			return err
		}
		return remove(id)
	})
	if err != nil {
		return nil, fmt.Errorf("gvisor restore baseline: %w", err)
	}
	c := Latencies(OpTurnComplete, ckpt)
	c.Baseline = BaselineGVisorCheckpoint
	r := Latencies(OpRollback, restore)
	r.Baseline = BaselineGVisorRestore
	return []Result{c, r}, nil
}

// writeSleepSpec writes an OCI config.json into bundle for a sandbox that
// sleeps in rootfs (read-only) with no network.
func writeSleepSpec(bundle, rootfs string) error {
	s := &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			Args: []string{"/bin/sleep", "1000000"},
			Env:  []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
			Cwd:  "/",
		},
		Root:     &specs.Root{Path: rootfs, Readonly: true},
		Hostname: "bench",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs"},
		},
		Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{
			{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace},
			{Type: specs.MountNamespace}, {Type: specs.NetworkNamespace},
		}},
	}
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o600)
}
