package e2b

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
)

// Labels the server keeps on the sessions it makes. The prefix is
// reserved: clients' metadata may not use it, and it is hidden from the
// metadata the server reports.
const (
	labelPrefix    = "e2b."
	labelTemplate  = labelPrefix + "template"   // the template id of the create request
	labelOnTimeout = labelPrefix + "on-timeout" // what the deadline does: onTimeoutKill or onTimeoutPause
	onTimeoutKill  = "kill"
	onTimeoutPause = "pause"
	// labelAutoResume, set to the create request's timeout in seconds,
	// makes an envd request to the paused sandbox resume it with that
	// lifetime (E2B's lifecycle.autoResume).
	labelAutoResume = labelPrefix + "auto-resume"
)

// expireTimeout bounds the pause or destroy a deadline runs.
const expireTimeout = 2 * time.Minute

// lifetimes keeps the deadlines of sandboxes: at its deadline a sandbox's
// on-timeout action (expire) runs. Deadlines live in memory only: after
// a restart the server gives every running E2B sandbox a fresh
// DefaultTimeout (see Server.armRecovered). Safe for concurrent use.
type lifetimes struct {
	expire func(id string) // runs a sandbox's on-timeout action

	mu       sync.Mutex
	closed   bool
	deadline map[string]*deadline
	running  sync.WaitGroup // expire calls in progress
}

// deadline is one sandbox's armed timer.
type deadline struct {
	at    time.Time
	timer *time.Timer
}

func newLifetimes(expire func(id string)) *lifetimes {
	return &lifetimes{expire: expire, deadline: map[string]*deadline{}}
}

// set gives sandbox id the deadline now+d, replacing any it had. It does
// nothing once the lifetimes are stopped.
func (l *lifetimes) set(id string, d time.Duration) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.setLocked(id, d)
}

// extend moves sandbox id's deadline to now+d unless it is later already
// (connect and resume never shorten a lifetime).
func (l *lifetimes) extend(id string, d time.Duration) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur := l.deadline[id]; cur != nil && cur.at.After(time.Now().Add(d)) {
		return cur.at
	}
	return l.setLocked(id, d)
}

// setLocked is set with l.mu held.
func (l *lifetimes) setLocked(id string, d time.Duration) time.Time {
	at := time.Now().Add(d)
	if l.closed {
		return at
	}
	if old := l.deadline[id]; old != nil {
		old.timer.Stop()
	}
	dl := &deadline{at: at}
	dl.timer = time.AfterFunc(d, func() { l.fire(id, dl) })
	l.deadline[id] = dl
	return at
}

// clear removes sandbox id's deadline (a paused or destroyed sandbox).
func (l *lifetimes) clear(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if dl := l.deadline[id]; dl != nil {
		dl.timer.Stop()
		delete(l.deadline, id)
	}
}

// at returns sandbox id's deadline, if it has one.
func (l *lifetimes) at(id string) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if dl := l.deadline[id]; dl != nil {
		return dl.at, true
	}
	return time.Time{}, false
}

// fire runs when dl's timer goes off: unless the deadline was replaced,
// cleared or the lifetimes stopped meanwhile, it runs the action.
func (l *lifetimes) fire(id string, dl *deadline) {
	l.mu.Lock()
	if l.closed || l.deadline[id] != dl {
		l.mu.Unlock()
		return
	}
	delete(l.deadline, id)
	l.running.Add(1)
	l.mu.Unlock()
	defer l.running.Done()
	l.expire(id)
}

// stop disarms every deadline and waits for actions already running.
func (l *lifetimes) stop() {
	l.mu.Lock()
	l.closed = true
	for id, dl := range l.deadline {
		dl.timer.Stop()
		delete(l.deadline, id)
	}
	l.mu.Unlock()
	l.running.Wait()
}

// expire runs sandbox id's on-timeout action: pause when it was created
// with autoPause (falling back to destroy when the pause fails, so that
// an expired sandbox never keeps running), else destroy.
func (s *Server) expire(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), expireTimeout)
	defer cancel()
	info, err := s.host.Session(id)
	if err != nil {
		return // gone already
	}
	env := s.host.NewEnvironment()
	if err := env.AttachSession(id); err != nil {
		return
	}
	if info.Labels[labelOnTimeout] == onTimeoutPause {
		err := s.pause(ctx, env)
		if err == nil || errors.Is(err, environment.ErrNotActive) && s.state(id) == environment.StatePaused {
			s.log.Info("e2b: sandbox timed out and was paused", "sandbox", id)
			return
		}
		s.log.Warn("e2b: pausing a timed-out sandbox failed; destroying it", "sandbox", id, "err", err)
	}
	if err := env.Destroy(ctx); err != nil {
		s.log.Error("e2b: destroying a timed-out sandbox", "sandbox", id, "err", err)
		return
	}
	s.log.Info("e2b: sandbox timed out and was destroyed", "sandbox", id)
}

// state is session id's state ("" when it is gone).
func (s *Server) state(id string) environment.SessionState {
	info, err := s.host.Session(id)
	if err != nil {
		return ""
	}
	return info.State
}

// armRecovered gives every active sandbox made through E2B (it has the
// template label) a fresh DefaultTimeout deadline: deadlines are not
// persisted, so after a restart a sandbox lives DefaultTimeout (capped
// by the maximum) from the server's start. Paused sandboxes stay
// without one until connected; sessions made through turnbox's own API
// never get one unless an E2B timeout call sets it.
func (s *Server) armRecovered() {
	for _, info := range s.host.Sessions() {
		if _, ok := info.Labels[labelTemplate]; ok && info.State == environment.StateActive {
			s.life.set(info.ID, min(DefaultTimeout, s.maxTTL))
		}
	}
}

// autoResume resumes paused sandbox id for an envd request when it was
// created with autoResume, giving it the lifetime it was created with. It
// reports whether the sandbox is active afterwards (a concurrent resume
// counts).
func (s *Server) autoResume(ctx context.Context, info embedded.SessionInfo) bool {
	secs, err := strconv.ParseInt(info.Labels[labelAutoResume], 10, 64)
	if err != nil || info.State != environment.StatePaused {
		return false
	}
	env, err := s.attach(info.ID)
	if err == nil {
		err = env.Resume(ctx)
	}
	if err != nil && s.state(info.ID) != environment.StateActive {
		s.log.Warn("e2b: auto-resuming a paused sandbox failed", "sandbox", info.ID, "err", err)
		return false
	}
	ttl, _ := s.ttl(&secs)
	s.life.extend(info.ID, ttl)
	s.log.Info("e2b: sandbox resumed by a request (autoResume)", "sandbox", info.ID)
	return true
}

// pause is E2B's pause: like E2B's, it keeps the sandbox's processes
// across a server restart where the host can (Hibernate: gvisor, a
// session without a network), else it freezes the sandbox in memory
// (Pause), which a restart turns into files only.
func (s *Server) pause(ctx context.Context, env *embedded.Environment) error {
	if s.host.Capabilities().MemorySnapshots {
		err := env.Hibernate(ctx)
		if !errors.Is(err, environment.ErrCapabilityNotSupported) && !errors.Is(err, environment.ErrBusy) {
			return err
		}
		s.log.Debug("e2b: sandbox cannot hibernate; pausing it in memory", "sandbox", env.SessionID(), "err", err)
	}
	return env.Pause(ctx)
}
