package embedded

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/embedded/ledger"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/snapshot"
)

// sessionDeps is everything a session (and the sandbox pool, which starts
// sandboxes for sessions) uses and does not own: the host's storage,
// runtime, ledger, metrics and logger, the configuration values they
// read, and the two host actions a session triggers. NewHost builds one;
// every session shares it, and it never changes afterwards. A session
// reaches its host through nothing else.
type sessionDeps struct {
	storage snapshot.Backend
	runtime container.Runtime
	ledger  *ledger.Ledger
	metrics *metrics
	log     *slog.Logger
	images  images
	// imageVols makes the images' base volumes that session roots
	// clone.
	imageVols *imageVolumes
	// net gives sessions their networks (nil: mode none only).
	net *hostNetwork
	// mem is where memory images are kept (memstore.go).
	mem memStore
	sessionSettings

	// stopForks stops the sandboxes of the sessions forked from session
	// parent, before parent's volume is destroyed (see zfsmounts.go).
	stopForks func(ctx context.Context, parent string)
	// forget removes a destroyed session from its host.
	forget func(s *session)
}

// sessionSettings are the host's configuration values that sessions read.
type sessionSettings struct {
	// canPause: the runtime can freeze sandboxes (Capabilities.Pause).
	canPause bool
	// memory: sandboxes can be saved and restored
	// (Capabilities.MemorySnapshots).
	memory bool
	// remountRestarts: sandboxes are restarted around a rollback or the
	// promotion of a fork's clone (see zfsmounts.go).
	remountRestarts bool
	// idlePause is Config.IdlePause where the runtime can pause, else 0
	// (off).
	idlePause time.Duration
	// toolTimeout, maxToolTimeout and maxOutputBytes: Config's.
	toolTimeout    time.Duration
	maxToolTimeout time.Duration
	maxOutputBytes int
	// limits are the host's sandbox limits (Config.Limits with defaults).
	limits container.Limits
	// diskQuota is the host's default disk quota (Config.DiskQuotaBytes
	// resolved for the backend).
	diskQuota int64
	// retention is Config.Retention.
	retention ledger.Retention
	// maxProcs, maxEndedProcs and procOutputBytes: Config's MaxProcesses,
	// MaxEndedProcesses and ProcessOutputBytes.
	maxProcs, maxEndedProcs, procOutputBytes int
}

// storageError maps what storage (a backend or the ledger) reports to the
// environment's sentinels: no space is ErrLimitExceeded, a name taken
// already is ErrAlreadyExists. The result keeps the storage error's text
// and matches both sentinels. Any other error comes back unchanged.
// Callers wrap the result with what they were doing.
func storageError(err error) error {
	switch {
	case errors.Is(err, snapshot.ErrNoSpace):
		return mappedError{err: err, sentinel: environment.ErrLimitExceeded}
	case errors.Is(err, snapshot.ErrExists), errors.Is(err, ledger.ErrExists):
		return mappedError{err: err, sentinel: environment.ErrAlreadyExists}
	}
	return err
}

// mappedError is a storage error that also matches an environment
// sentinel.
type mappedError struct{ err, sentinel error }

// Error is the storage error's text, led by the sentinel's unless it says
// it already.
func (e mappedError) Error() string {
	if msg := e.err.Error(); strings.Contains(msg, e.sentinel.Error()) {
		return msg
	}
	return e.sentinel.Error() + ": " + e.err.Error()
}

// Unwrap gives both the sentinel and the storage error.
func (e mappedError) Unwrap() []error { return []error{e.sentinel, e.err} }

// unlessGone is err, or nil when it says the volume or snapshot to delete
// is gone already.
func unlessGone(err error) error {
	if errors.Is(err, snapshot.ErrNotFound) {
		return nil
	}
	return err
}
