package embedded

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/netns"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/snapshot"
)

// pool keeps sandboxes started ahead of time for new sessions
// (Config.PoolSize). Each runs the default image on an empty volume of its
// own, named pool-<random>; a new session of the default image takes one
// and keeps that volume (its ledger record names it), so creating the
// session costs a ledger record instead of a volume and a sandbox start.
// A fork takes one too where the backend is a snapshot.Replacer: the
// snapshot is swapped into the pooled volume in place, as a rollback
// would, and the sandbox sees it through its bind mount of the volume's
// directory.
// On a host whose default network mode is egress or open (networked),
// each pooled sandbox starts in a network namespace of its own
// (hostNetwork.prepare, keyed by the volume's name), made before the
// sandbox because gVisor's netstack takes the namespace's interfaces
// when it boots. Its veth waits attached to the firewall under the
// pool's name with policy none (everything refused, every name
// NXDOMAIN), so that a claim only renames it to the session's id and
// updates it to the session's policy (hostNetwork.adopt), one small
// nftables transaction instead of a whole Attach.
// Sessions of the other class (none on a networked host, or a network on
// a none host) miss the pool.
// One goroutine refills the pool, one sandbox at a time, after every
// claim (once the claiming create has returned). Unclaimed sandboxes and volumes are removed by Close; after a
// crash, recovery deletes their volumes (no session records them) and
// reaps their sandboxes with every other orphan.
type pool struct {
	deps *sessionDeps
	size int
	// networked: pooled sandboxes have a network namespace each (the
	// host's default mode is egress or open).
	networked bool

	ctx    context.Context
	cancel context.CancelFunc
	wake   chan struct{}
	done   chan struct{}

	mu     sync.Mutex
	ready  []*pooled
	closed bool
}

// pooled is one sandbox waiting in the pool, with its volume and, in a
// networked pool, its namespace (not attached to the firewall).
type pooled struct {
	vol  snapshot.Volume
	sb   container.Sandbox
	link *netns.Link // nil in a pool without networks
}

// poolVolumePrefix starts the names of pooled volumes.
const poolVolumePrefix = "pool-"

// poolRetryMax bounds the wait between failed refills.
const poolRetryMax = 30 * time.Second

func newPool(deps *sessionDeps, size int, networked bool) *pool {
	ctx, cancel := context.WithCancel(context.Background())
	p := &pool{deps: deps, size: size, networked: networked, ctx: ctx, cancel: cancel, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go p.run()
	p.kick()
	return p
}

// kick asks the refill goroutine to top the pool up.
func (p *pool) kick() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// short reports whether the pool holds fewer sandboxes than it should.
func (p *pool) short() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.closed && len(p.ready) < p.size
}

func (p *pool) run() {
	defer close(p.done)
	retry := &backoff.ExponentialBackOff{InitialInterval: time.Second, Multiplier: 2, MaxInterval: poolRetryMax}
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-p.wake:
		}
		for p.short() {
			e, err := p.make(p.ctx)
			if err != nil {
				if p.ctx.Err() != nil {
					return
				}
				wait := retry.NextBackOff()
				p.deps.log.Error("starting a sandbox for the pool", "err", err, "retry_in", wait)
				select {
				case <-p.ctx.Done():
					return
				case <-time.After(wait):
				}
				continue
			}
			retry.Reset()
			if !p.put(e) {
				p.discard(e)
				return
			}
		}
	}
}

// make starts one pooled sandbox on a new root volume (a clone of the
// default image's base volume), in a namespace of its own in a networked
// pool.
func (p *pool) make(ctx context.Context) (*pooled, error) {
	rootfs, err := p.deps.images.path("")
	if err != nil {
		return nil, err
	}
	name := poolVolumePrefix + strings.TrimPrefix(newID(), "s-")
	vol, err := p.deps.newRootVolume(ctx, name, "")
	if err != nil {
		return nil, fmt.Errorf("creating volume %s: %w", name, err)
	}
	e := &pooled{vol: vol}
	spec := container.Spec{
		ID: name, RootFS: rootfs, Root: vol.Path, Workspace: workspacePath(vol.Path, true),
		Limits: p.deps.limits, Network: container.NetworkNone,
	}
	start := time.Now()
	if p.networked {
		l, err := p.deps.net.prepare(ctx, name)
		if err != nil {
			p.discard(e)
			return nil, err
		}
		e.link = &l
		spec.Network, spec.NetNS = container.NetworkNamespace, l.NetNS
		// A create's claim then need not write it (a fork's does).
		if err := writeResolvConf(ctx, workspace{tree: vol.Path}, name, l.HostAddr.String()); err != nil {
			p.discard(e)
			return nil, err
		}
	}
	if e.sb, err = p.deps.runtime.Start(ctx, spec); err != nil {
		p.discard(e)
		return nil, fmt.Errorf("starting sandbox %s: %w", name, err)
	}
	p.deps.log.Debug("pooled sandbox started", "volume", name, "network", e.link != nil, "took", time.Since(start))
	return e, nil
}

// len returns how many sandboxes wait in the pool.
func (p *pool) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ready)
}

// put adds e to the pool; false if the pool is closed or full.
func (p *pool) put(e *pooled) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.ready) >= p.size {
		return false
	}
	p.ready = append(p.ready, e)
	return true
}

// claim takes a live sandbox out of the pool for a session with a
// network (networked) or without, or returns nil when none of that class
// is ready (the caller starts one itself). After a miss the pool
// refills at once; after a hit the caller kicks it once the session is
// created, so that the refill's sandbox start (and namespace) does not
// compete with the claim for the CPU.
func (p *pool) claim(networked bool) *pooled {
	for {
		p.mu.Lock()
		if len(p.ready) == 0 || networked != p.networked {
			p.mu.Unlock()
			p.deps.metrics.poolClaims.WithLabelValues("miss").Inc()
			p.kick()
			return nil
		}
		e := p.ready[0]
		p.ready = p.ready[1:]
		p.mu.Unlock()
		select {
		case <-e.sb.Done():
			p.deps.log.Warn("pooled sandbox died while waiting; discarding it", "volume", e.vol.Name, "err", e.sb.Err())
			p.discard(e)
			continue
		default:
		}
		p.deps.metrics.poolClaims.WithLabelValues("hit").Inc()
		return e
	}
}

// giveBack returns an unused claim to the pool (or discards it).
func (p *pool) giveBack(e *pooled) {
	if !p.put(e) {
		p.discard(e)
	}
}

// discard stops e's sandbox (if it has one), destroys its namespace (if
// it has one) and deletes its volume.
func (p *pool) discard(e *pooled) {
	ctx := context.Background()
	if e.sb != nil {
		if err := stopBounded(ctx, e.sb); err != nil {
			p.deps.log.Warn("stopping pooled sandbox", "volume", e.vol.Name, "err", err)
		}
	}
	if e.link != nil {
		dctx, cancel := context.WithTimeout(ctx, netDestroyTimeout)
		p.deps.net.drop(dctx, *e.link)
		cancel()
	}
	if err := unlessGone(p.deps.storage.DestroyVolume(ctx, e.vol.Name)); err != nil {
		p.deps.log.Warn("deleting pooled volume", "volume", e.vol.Name, "err", err)
	}
}

// close stops refilling, then stops every pooled sandbox and deletes its
// namespace and volume.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	ready := p.ready
	p.ready = nil
	p.mu.Unlock()
	p.cancel()
	<-p.done
	for _, e := range ready {
		p.discard(e)
	}
}

// PoolReady returns how many started sandboxes wait in the pool
// (Config.PoolSize; 0 without a pool).
func (h *Host) PoolReady() int {
	if h.pool == nil {
		return 0
	}
	return h.pool.len()
}

// poolable reports whether a new session with cfg can take a pooled
// sandbox: one of the default image, and for a fork a backend that can
// put the snapshot into the pooled volume in place (snapshot.Replacer:
// btrfs and localdisk; zfs volumes are mounts, which a started sandbox
// would not see). Whether its network class matches the pool's is
// pool.claim's to say (a mismatch counts as a miss).
func (h *Host) poolable(cfg environment.SessionConfig) bool {
	if h.pool == nil || (cfg.Image != "" && cfg.Image != h.cfg.DefaultImage) {
		return false
	}
	if l := cfg.Limits; l.MemoryBytes != 0 || l.CPUs != 0 || l.Pids != 0 {
		return false // pooled sandboxes run with the host's limits
	}
	if cfg.FromSnapshot != "" {
		_, ok := h.storage.(snapshot.Replacer)
		return ok
	}
	return true
}
