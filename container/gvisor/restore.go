package gvisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/turnbox/turnbox/container"
)

var _ container.Restorer = (*Runtime)(nil)

// imageMeta is what a memory image holds besides runsc's own files: the
// host side of the agent connection at the checkpoint. The host writes
// it into an image directory only it can write.
type imageMeta struct {
	// LastRequestID is the agent client's last request id at the
	// checkpoint (see agent.NewRestoredClient).
	LastRequestID uint64 `json:"lastRequestID"`
}

// metaFile is imageMeta's file in an image directory.
const metaFile = "turnbox-image.json"

// maxMeta bounds the bytes of metaFile Restore reads.
const maxMeta = 4096

// DefaultSnapshotTimeout bounds SnapshotMemory and Checkpoint (runsc's
// save and the pause around it) when ctx has no deadline.
const DefaultSnapshotTimeout = 2 * time.Minute

// thawTimeout bounds the resume that ends a snapshot, whatever ctx.
const thawTimeout = 30 * time.Second

// Checkpoint saves the sandbox's memory state to dir and leaves the
// sandbox running: SnapshotMemory with nothing to do while frozen.
func (s *Sandbox) Checkpoint(ctx context.Context, dir string) error {
	return s.SnapshotMemory(ctx, dir, nil)
}

// SnapshotMemory implements container.MemorySnapshotter. With the agent
// connection quiet (agent.Client.Quiesce) it pauses gVisor's kernel
// (every task stopped at a safe point), saves the sandbox with `runsc
// checkpoint --leave-running` (which pauses and resumes the kernel
// itself, and leaves our pause in place: pauses nest), calls during,
// and resumes. Only sandboxes with container.NetworkNone: a sandbox in a
// host network namespace would come back with sockets that no longer
// match the host's (ErrUnsupported). dir must be new or empty
// (ErrInvalidSpec); on a paused sandbox it returns container.ErrPaused.
func (s *Sandbox) SnapshotMemory(ctx context.Context, dir string, during func(ctx context.Context) error) error {
	if s.network != container.NetworkNone {
		return fmt.Errorf("gvisor: sandbox %s: memory snapshot with network %q: %w", s.ID(), s.network, container.ErrUnsupported)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultSnapshotTimeout)
		defer cancel()
	}
	return s.While(func() (err error) {
		if err := emptyImageDir(dir); err != nil {
			return err
		}
		err = s.Client().Quiesce(ctx, func() error { return s.r.control(ctx, s.ID(), ctlPause) })
		if err != nil {
			return fmt.Errorf("gvisor: sandbox %s: freeze for a snapshot: %w", s.ID(), err)
		}
		defer func() { // also if during panics
			tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), thawTimeout)
			defer cancel()
			if terr := s.r.control(tctx, s.ID(), ctlResume); terr != nil {
				err = errors.Join(err, fmt.Errorf("gvisor: sandbox %s: thaw after a snapshot: %w", s.ID(), terr))
			}
		}()
		return s.frozenSnapshot(ctx, dir, during)
	}, container.StatusRunning)
}

// emptyImageDir makes dir for an image, or checks that it is empty: runsc
// does not save two images into one directory.
func emptyImageDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("gvisor: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("gvisor: %w", err)
	}
	if len(ents) > 0 {
		return fmt.Errorf("%w: gvisor: image directory %s is not empty", container.ErrInvalidSpec, dir)
	}
	return nil
}

// frozenSnapshot is SnapshotMemory's part while the sandbox is paused.
func (s *Sandbox) frozenSnapshot(ctx context.Context, dir string, during func(ctx context.Context) error) error {
	if _, err := s.r.runsc(ctx, "checkpoint", "--image-path", dir, "--leave-running", s.ID()); err != nil {
		return fmt.Errorf("gvisor: %w", err)
	}
	// Read after the save: no id the saved agent knows is above it.
	meta, err := json.Marshal(imageMeta{LastRequestID: s.Client().LastRequestID()})
	if err != nil {
		return fmt.Errorf("gvisor: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, metaFile), meta, 0o600); err != nil {
		return fmt.Errorf("gvisor: %w", err)
	}
	if during != nil {
		if err := during(ctx); err != nil {
			return fmt.Errorf("gvisor: sandbox %s: while frozen: %w", s.ID(), err)
		}
	}
	return nil
}

// Restore implements container.Restorer: it starts sandbox spec.ID from
// the image in imageDir (written by SnapshotMemory or Checkpoint) with
// `runsc restore --background` (the sandbox runs while its memory pages
// still load; runsc holds the image's pages file open until they are
// in, and a failed load kills the sandbox), gives its agent new pipes
// and returns once the restored agent answers. The agent keeps serving
// its processes of the checkpoint; their host handles do not come back
// (RunningProcess values of the old sandbox are not the new one's). spec must have container.NetworkNone and
// describe the same sandbox as the checkpointed one (the same RootFS
// image and limits; its Workspace or Root may be another host directory
// holding the files of the checkpoint's instant, at the same place in
// its parent). On failure nothing of the new sandbox is left.
func (r *Runtime) Restore(ctx context.Context, spec container.Spec, imageDir string) (container.Sandbox, error) {
	sb, err := r.RestoreSandbox(ctx, spec, imageDir)
	if err != nil {
		return nil, err // not a nil *Sandbox in a non-nil interface
	}
	return sb, nil
}

// RestoreSandbox is Restore returning the concrete type.
func (r *Runtime) RestoreSandbox(ctx context.Context, spec container.Spec, imageDir string) (*Sandbox, error) {
	if spec.Network != "" && spec.Network != container.NetworkNone {
		return nil, fmt.Errorf("gvisor: restore %s with network %q: %w", spec.ID, spec.Network, container.ErrUnsupported)
	}
	meta, err := readImageMeta(imageDir)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, r.cfg.startTimeout)
	defer cancel()
	return r.launch(rctx, spec, imageDir, meta.LastRequestID)
}

// readImageMeta reads the turnbox part of the image in dir.
func readImageMeta(dir string) (imageMeta, error) {
	var m imageMeta
	f, err := os.Open(filepath.Join(dir, metaFile))
	if err != nil {
		return m, fmt.Errorf("%w: gvisor: not a memory image: %w", container.ErrInvalidSpec, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxMeta+1))
	if err != nil {
		return m, fmt.Errorf("gvisor: image %s: %w", dir, err)
	}
	if len(b) > maxMeta {
		return m, fmt.Errorf("%w: gvisor: image %s: %s too large", container.ErrInvalidSpec, dir, metaFile)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%w: gvisor: image %s: %s: %w", container.ErrInvalidSpec, dir, metaFile, err)
	}
	return m, nil
}
