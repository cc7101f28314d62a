package embedded

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/turnbox/turnbox/embedded/ledger"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/snapshot"
)

// creation is one session being created (Host.createSession). It runs as
// a list of steps; each step that leaves something behind registers how
// to undo it, and when a step fails the undos run in reverse order, so a
// failed create leaves nothing: no record, volume, sandbox, pooled
// sandbox or reserved id. Every input is checked, and the image found,
// before anything is recorded or written. Records come before data: the
// session is recorded (state creating) before its volume exists, so a
// crash in between leaves a record without a volume, which recovery
// drops.
type creation struct {
	h     *Host
	ctx   context.Context
	cfg   environment.SessionConfig
	start time.Time

	parent ledger.SnapshotRecord // the snapshot a fork starts from
	quota  *int64                // the session's own disk quota, if any
	pooled *pooled               // a claimed pooled sandbox, if any
	held   *pooled               // pooled while no one else owns it yet
	volume string                // the session's volume name
	// rootTree: the volume holds the session's whole root (see
	// imagevol.go); a fork's follows its parent's.
	rootTree bool
	// image: the defaults the session takes from its image's config
	// (imagecfg.go); a fork's are its parent's.
	image *ledger.ImageDefaults
	rec   ledger.SessionRecord
	s     *session

	undo []func(ctx context.Context)
}

// createSession creates a session from cfg (a fork when cfg.FromSnapshot
// is set) and returns it active, its sandbox started.
func (h *Host) createSession(ctx context.Context, cfg environment.SessionConfig) (*session, error) {
	c := &creation{h: h, ctx: ctx, cfg: cfg, start: time.Now()}
	defer func() {
		if c.pooled != nil {
			h.pool.kick() // refill what was claimed (claim's doc)
		}
	}()
	for _, step := range []func() error{
		c.check, c.claimPooled, c.reserve, c.record, c.makeVolume, c.makeImageWorkDir, c.applyQuota, c.startSandbox, c.activate,
	} {
		if err := step(); err != nil {
			c.unwind()
			return nil, err
		}
	}
	op := "create"
	if cfg.FromSnapshot != "" {
		op = "fork"
	}
	h.metrics.observe(op, c.start)
	h.log.Info("session created", "session", c.s.id, "from_snapshot", cfg.FromSnapshot, "pooled", c.pooled != nil, "took", time.Since(c.start))
	return c.s, nil
}

// onFailure registers fn to undo a step that succeeded.
func (c *creation) onFailure(fn func(ctx context.Context)) { c.undo = append(c.undo, fn) }

// unwind undoes the steps made so far, newest first, whatever the
// caller's context says.
func (c *creation) unwind() {
	ctx := context.WithoutCancel(c.ctx)
	for i := len(c.undo) - 1; i >= 0; i-- {
		c.undo[i](ctx)
	}
}

// check validates the config, picks an id and finds the parent snapshot
// of a fork and the quota the session inherits.
func (c *creation) check() error {
	h := c.h
	if err := c.cfg.Validate(); err != nil {
		return err
	}
	if _, err := h.imagePath(c.cfg.Image); err != nil {
		return err
	}
	if c.cfg.SessionID == "" {
		c.cfg.SessionID = newID()
	}
	c.rootTree = newSessionsRootTree
	if err := h.checkLimits(c.cfg.Limits); err != nil {
		return err
	}
	if c.cfg.FromSnapshot != "" {
		var err error
		if c.parent, err = h.ledger.Snapshot(c.cfg.FromSnapshot); err != nil {
			return fmt.Errorf("%w: %q: %v", environment.ErrSnapshotNotFound, c.cfg.FromSnapshot, err)
		}
		// A fork keeps its parent's own disk quota, if it has one, and
		// its volume's layout.
		if prec, err := h.ledger.Session(c.parent.Session); err == nil {
			if prec.DiskQuotaBytes != nil {
				q := *prec.DiskQuotaBytes
				c.quota = &q
			}
			c.rootTree = prec.RootTree
			c.image = prec.Image
		}
	} else {
		c.image = h.deps.imageDefaults(c.cfg.Image)
	}
	if c.image != nil && !c.rootTree {
		// An older layout's root is the image's directory, read-only:
		// no WORKDIR can be made in it.
		img := *c.image
		img.WorkDir = ""
		c.image = &img
		if len(img.Env) == 0 && img.User == "" {
			c.image = nil
		}
	}
	if d := c.cfg.Limits.DiskBytes; d > 0 {
		c.quota = &d
	}
	c.volume = c.cfg.SessionID
	if err := c.checkNetwork(); err != nil {
		return err
	}
	return c.checkMemory(c.parentConfig())
}

// claimPooled takes a pooled sandbox, whose volume the session then keeps.
// (Claimed before h.mu: a claim may discard a dead sandbox, slowly.) Until
// makeVolume hands it to the session, a failure gives it back.
func (c *creation) claimPooled() error {
	// Pooled sandboxes run in their own root, read-write.
	// A memory session's sandbox is its own (a fork's is restored).
	if !c.h.poolable(c.cfg) || !c.rootTree || c.cfg.ReadOnlyRoot || c.cfg.SnapshotMemory {
		return nil
	}
	if c.pooled = c.h.pool.claim(c.cfg.Network.Mode.Rank() > 0); c.pooled == nil {
		return nil
	}
	c.volume, c.held = c.pooled.vol.Name, c.pooled
	c.onFailure(func(context.Context) {
		if c.held != nil {
			c.h.pool.giveBack(c.held)
		}
	})
	return nil
}

// reserve adds the session to the host (state creating), so that
// concurrent creates of the same id cannot race.
func (c *creation) reserve() error {
	h, id := c.h, c.cfg.SessionID
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.closed:
		return environment.ErrClosed
	case h.sessions[id] != nil:
		return fmt.Errorf("%w: session %q", environment.ErrAlreadyExists, id)
	case h.cfg.MaxSessions > 0 && len(h.sessions) >= h.cfg.MaxSessions:
		return fmt.Errorf("%w: the host already has its maximum of %d sessions", environment.ErrLimitExceeded, h.cfg.MaxSessions)
	}
	cfgJSON, _ := json.Marshal(c.cfg)
	c.rec = ledger.SessionRecord{
		ID: id, Volume: c.volume, Backend: h.storage.Kind(), Runtime: h.runtime.Kind(),
		State: string(environment.StateCreating), Config: cfgJSON,
		ParentSession: c.parent.Session, ParentSnapshot: c.cfg.FromSnapshot, CreatedAt: time.Now().UTC(),
		DiskQuotaBytes: c.quota, RootTree: c.rootTree, Image: c.image,
	}
	c.s = newSession(h.deps, c.rec, snapshot.Volume{})
	h.sessions[id] = c.s
	c.onFailure(func(context.Context) { h.forget(c.s) })
	return nil
}

// record writes the session's ledger record.
func (c *creation) record() error {
	if err := c.h.ledger.PutSession(c.rec); err != nil {
		return fmt.Errorf("embedded: recording session %q: %w", c.rec.ID, storageError(err))
	}
	c.onFailure(func(context.Context) { _ = c.h.ledger.DeleteSession(c.rec.ID) })
	return nil
}

// makeVolume makes the session's volume, its root tree: a clone of its
// image's base volume, a clone of the parent snapshot, or the pooled
// sandbox's volume (a fork's takes the snapshot in place, where the
// pooled sandbox sees it).
func (c *creation) makeVolume() error {
	h, p := c.h, c.parent
	var vol snapshot.Volume
	var err error
	switch {
	case c.pooled != nil && c.cfg.FromSnapshot != "":
		vol = c.pooled.vol
		if err = h.storage.(snapshot.Replacer).ReplaceVolume(c.ctx, c.volume, p.Volume, p.BackendName); err != nil {
			h.pool.discard(c.pooled)
			c.held = nil
			return fmt.Errorf("embedded: filling the fork's workspace: %w", storageError(err))
		}
	case c.pooled != nil:
		vol = c.pooled.vol
	case c.cfg.FromSnapshot != "":
		vol, err = h.storage.CloneVolume(c.ctx, c.volume, p.Volume, p.BackendName)
	case c.rootTree:
		vol, err = h.deps.newRootVolume(c.ctx, c.volume, c.cfg.Image)
	default:
		vol, err = h.storage.CreateVolume(c.ctx, c.volume) // older hosts' layout
	}
	if err != nil {
		return fmt.Errorf("embedded: creating volume %q: %w", c.volume, storageError(err))
	}
	c.onFailure(func(ctx context.Context) { _ = h.storage.DestroyVolume(ctx, c.volume) })
	s := c.s
	s.mu.Lock()
	s.vol = vol
	if c.pooled != nil {
		s.sb = c.pooled.sb
		go s.watchSandbox(c.pooled.sb)
	}
	s.mu.Unlock()
	c.held = nil
	// The session owns the pooled sandbox now; stopSandbox stops it.
	c.onFailure(func(ctx context.Context) { _ = s.stopSandbox(ctx) })
	return nil
}

// applyQuota gives the volume the session's disk quota.
func (c *creation) applyQuota() error { return c.s.applyQuota(c.ctx, false) }

// checkNetwork settles the session's network policy (effectiveNetwork),
// which its record then keeps: restarts of the host keep it.
func (c *creation) checkNetwork() error {
	var parent *environment.NetworkPolicy
	if pcfg := c.parentConfig(); pcfg != nil {
		parent = &pcfg.Network
	}
	p, err := c.h.effectiveNetwork(c.cfg.Network, parent)
	if err != nil {
		return err
	}
	c.cfg.Network = p
	return nil
}

// parentConfig is a fork's parent session's config (nil for a new
// session, or a parent whose record is gone or unreadable).
func (c *creation) parentConfig() *environment.SessionConfig {
	if c.cfg.FromSnapshot == "" {
		return nil
	}
	prec, err := c.h.ledger.Session(c.parent.Session)
	if err != nil {
		return nil
	}
	var pcfg environment.SessionConfig
	if json.Unmarshal(prec.Config, &pcfg) != nil {
		return nil
	}
	return &pcfg
}

// startSandbox starts the session's sandbox: a pooled one runs already
// (its namespace is attached to the firewall for the session here), a
// fork of a memory snapshot's is restored from its image.
// A failure, or a later step's, removes its network.
func (c *creation) startSandbox() error {
	c.onFailure(func(context.Context) { c.h.net.release(c.s.id) })
	if c.parent.Memory {
		return c.restoreFork() // never a pooled sandbox
	}
	if c.pooled != nil && c.pooled.link != nil {
		if err := c.s.adoptNetwork(c.ctx, *c.pooled.link, c.cfg.FromSnapshot != ""); err != nil {
			return err
		}
	}
	return c.s.ensureSandbox(c.ctx)
}

// activate records the session as active.
func (c *creation) activate() error {
	if err := c.h.ledger.UpdateSession(c.rec.ID, func(r *ledger.SessionRecord) error {
		r.State = string(environment.StateActive)
		return nil
	}); err != nil {
		return fmt.Errorf("embedded: recording session: %w", err)
	}
	s := c.s
	s.mu.Lock()
	s.state = environment.StateActive
	s.mu.Unlock()
	s.touch()
	return nil
}
