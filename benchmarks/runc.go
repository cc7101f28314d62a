package benchmarks

import (
	"context"
	"errors"
	"os/exec"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/runc"
)

// RuncBinaryCandidates are where RuncBaselines looks for the runc binary
// when it is not on PATH (Debian's apt runc installs /usr/sbin/runc).
var RuncBinaryCandidates = []string{"/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc", "/usr/local/bin/runc"}

// ErrNoRuncBinary reports that the runc binary the runc-exec baseline
// needs was not found. The runc runtime itself does not need it
// (it links libcontainer).
var ErrNoRuncBinary = errors.New("benchmarks: no runc binary for the runc-exec baseline (apt-get install runc)")

// FindRuncBinary returns the path of the runc binary: on PATH, else the
// first of RuncBinaryCandidates that exists.
func FindRuncBinary() (string, error) {
	if p, err := exec.LookPath("runc"); err == nil {
		return p, nil
	}
	for _, p := range RuncBinaryCandidates {
		if p, err := exec.LookPath(p); err == nil {
			return p, nil
		}
	}
	return "", ErrNoRuncBinary
}

// runcBaselineID names the baseline's container; it is not a session id
// (those start with "s-").
const runcBaselineID = "bench-runc-exec"

// RuncBaselines measures, for a host on the runc runtime, "runc-exec": a
// `runc exec` process per call running /bin/true in a container that the
// runc binary runs from rootfs with the session workspace's volume and
// the same root skeleton and OCI spec as a sandbox (rt.RuncExecBaseline).
// It returns ErrNoRuncBinary when there is no runc binary.
func RuncBaselines(ctx context.Context, rt *runc.Runtime, rootfs, workspace string, n int) (_ []Result, err error) {
	bin, err := FindRuncBinary()
	if err != nil {
		return nil, err
	}
	execTrue, cleanup, err := rt.RuncExecBaseline(ctx, bin, container.Spec{ID: runcBaselineID, RootFS: rootfs, Workspace: workspace, Network: container.NetworkNone})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, cleanup()) }()
	samples, err := timeN(n, func(int) error { return execTrue(ctx) })
	if err != nil {
		return nil, err
	}
	r := Latencies(OpExec, samples)
	r.Baseline = BaselineRuncExec
	return []Result{r}, nil
}
