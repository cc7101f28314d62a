package runc

import (
	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/turnbox/turnbox/container"
)

// BaselineSpec builds, for the runc-binary baseline benchmark, the same
// skeleton and OCI spec a sandbox gets, with args as the process.
func BaselineSpec(s container.Spec, skel, agent, cgroupPath string, args []string) (*specs.Spec, error) {
	binds, err := buildSkeleton(skel, s.RootFS, s.Workspace, agent)
	if err != nil {
		return nil, err
	}
	spec := ociSpec(s, skel, cgroupPath, "", binds, SeccompAvailable())
	spec.Process.Args = args
	spec.Process.Cwd = "/"
	spec.Process.Rlimits = nil
	return spec, nil
}

// InitPid returns the host pid of a runc sandbox's init (its agent).
func InitPid(sb container.Sandbox) int {
	pid, _ := sb.(*Sandbox).proc.Pid()
	return pid
}
