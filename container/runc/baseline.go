package runc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/turnbox/turnbox/container"
)

// RuncExecBaseline prepares the "runc-exec" benchmark baseline: a
// container run, detached, by the runc binary runcBin from spec's root
// filesystem and workspace, with the same root skeleton and OCI spec as a
// sandbox of r (its process is `sleep`, which the image must have). exec
// runs one `runc exec` process of /bin/true in it; cleanup kills and
// deletes the container and removes its files. spec.ID names the container
// and must not be a sandbox's: its skeleton and cgroup are where a
// sandbox's would be, so a host that crashes mid-benchmark reaps it (Reap)
// like a sandbox.
func (r *Runtime) RuncExecBaseline(ctx context.Context, runcBin string, spec container.Spec) (execTrue func(context.Context) error, cleanup func() error, err error) {
	if err := validateSpec(spec); err != nil {
		return nil, nil, err
	}
	skel := filepath.Join(r.skelRoot, spec.ID)
	if _, err := os.Lstat(skel); err == nil {
		return nil, nil, fmt.Errorf("runc baseline: %s exists: id %q is in use", skel, spec.ID)
	}
	dir, err := os.MkdirTemp(r.root, ".runc-exec-baseline-")
	if err != nil {
		return nil, nil, err
	}
	state := filepath.Join(dir, "state")
	runc := func(ctx context.Context, args ...string) *exec.Cmd {
		return exec.CommandContext(ctx, runcBin, append([]string{"--root", state}, args...)...)
	}
	started := false
	cleanup = func() error {
		var errs []error
		if started {
			_ = runc(context.WithoutCancel(ctx), "kill", spec.ID, "KILL").Run()
			if out, err := runc(context.WithoutCancel(ctx), "delete", "-f", spec.ID).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("runc delete: %v: %s", err, out))
			}
		}
		errs = append(errs, os.RemoveAll(skel), os.RemoveAll(dir))
		// The parent cgroup goes when no sandbox of r is left.
		r.forget("", nil)
		return errors.Join(errs...)
	}
	fail := func(err error) (func(context.Context) error, func() error, error) {
		_ = cleanup()
		return nil, nil, fmt.Errorf("runc baseline: %w", err)
	}
	binds, err := buildSkeleton(skel, spec.RootFS, spec.Workspace, r.agent)
	if err != nil {
		return fail(err)
	}
	s := ociSpec(spec, skel, r.cgroupPath(spec.ID), "", binds, r.seccomp)
	s.Process.Args = []string{"sleep", "1000000"}
	s.Process.Rlimits = nil
	js, err := json.Marshal(s)
	if err != nil {
		return fail(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), js, 0o600); err != nil {
		return fail(err)
	}
	// A detached container keeps its stdio: give it a file, not a pipe
	// that CombinedOutput would wait on.
	logf, err := os.Create(filepath.Join(dir, "run.log"))
	if err != nil {
		return fail(err)
	}
	defer logf.Close()
	run := runc(ctx, "run", "-d", "--bundle", dir, spec.ID)
	run.Stdout, run.Stderr = logf, logf
	started = true
	if err := run.Run(); err != nil {
		out, _ := os.ReadFile(logf.Name())
		return fail(fmt.Errorf("runc run: %v: %s", err, out))
	}
	execTrue = func(ctx context.Context) error {
		if out, err := runc(ctx, "exec", spec.ID, "/bin/true").CombinedOutput(); err != nil {
			return fmt.Errorf("runc exec: %v: %s", err, out)
		}
		return nil
	}
	return execTrue, cleanup, nil
}
