package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/snapshot"
)

// configFlags maps the embedded.Config fields that host errors name to the
// global flags that set them, longest field first so that a field that is
// a prefix of another (Config.Limits, Config.Limits.CPUs) is not replaced
// early.
var configFlags = []struct{ field, flag string }{
	{"Config.Limits.MemoryBytes", "--memory-limit"},
	{"Config.Limits.CPUs", "--cpus-limit"},
	{"Config.Limits.Pids", "--pids-limit"},
	{"Config.DiskQuotaBytes", "--disk-quota"},
	{"Config.StorageBackend", "--storage"},
	{"Config.ContainerRuntime", "--runtime"},
	{"Config.DefaultImage", "--image"},
	{"Config.StorageRoot", "--storage-root"},
	{"Config.MaxSessions", "--max-sessions"},
	{"Config.ZFSDataset", "--zfs-dataset"},
	{"Config.IdlePause", "--idle-pause"},
	{"Config.ZFSDriver", "--zfs-driver"},
	{"Config.AgentPath", "--agent"},
	{"Config.PoolSize", "--pool"},
	{"Config.StateDir", "--state-dir"},
	{"Config.NetworkUpstream", "--dns"},
	{"Config.NetworkCeiling", "--net-ceiling"},
	{"Config.Network", "--net-default/--net-allow"},
}

// hintError is an error whose text a person reads: it names what they
// typed. It unwraps to the original, so errors.Is still sees sentinels.
type hintError struct {
	err error
	msg string
}

func (e *hintError) Error() string { return e.msg }
func (e *hintError) Unwrap() error { return e.err }

// explainError rewrites err, returned by cmd, to name the flags and the
// state directory the user gave instead of the host's Config fields.
func explainError(g *globals, cmd *cobra.Command, err error) error {
	msg := err.Error()
	for _, f := range configFlags {
		msg = strings.ReplaceAll(msg, f.field, f.flag)
	}
	switch {
	case errors.Is(err, environment.ErrSessionNotFound) && !remoteCommand(cmd):
		msg += fmt.Sprintf(" (searched the state directory %s; set --state-dir or $TURNBOX_STATE_DIR for another)", g.stateDir)
	case strings.Contains(msg, "zfs backend needs a parent dataset"):
		msg += "; give it with --zfs-dataset"
	case errors.Is(err, snapshot.ErrUnsupported) && strings.Contains(msg, string(embedded.StorageBackendBtrfs)):
		msg += "; choose one with --storage-root DIR (default <state-dir>/btrfs)"
	}
	if msg == err.Error() {
		return err
	}
	return &hintError{err: err, msg: msg}
}

// remoteCommand reports whether cmd talked to a turnbox server rather than
// the local state directory.
func remoteCommand(cmd *cobra.Command) bool {
	if cmd == nil {
		return false
	}
	if f := cmd.Flags().Lookup("server"); f != nil {
		return f.Value.String() != "" || os.Getenv("TURNBOX_SERVER") != ""
	}
	return false
}
