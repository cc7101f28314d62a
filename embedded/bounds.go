package embedded

import "time"

// Bounds on the host's waits for a sandbox. Everything inside a sandbox,
// its agent process included, is under the control of the commands it
// runs: a fork bomb starves the agent, a hostile agent never answers. So
// every operation that waits on a sandbox has a bound whatever the
// caller's context, and past it the host stops waiting and does what it
// must without the sandbox's help (freeze it anyway, kill it, start a new
// one). No session lock is held across a wait longer than these. The
// agent client bounds its own requests too (agent.AnswerTimeout,
// agent.KillAllTimeout); these bound each step as the session sees it.
const (
	// idleQueryTimeout bounds the agent's Idle query before a snapshot.
	// No answer in time means "busy": the sandbox is frozen anyway.
	idleQueryTimeout = 3 * time.Second
	// freezeTimeout bounds one Pause or Resume of a sandbox. A sandbox
	// that cannot be frozen in time is snapshotted live; one that cannot
	// be thawed after a snapshot is stopped (the next call starts a new
	// one).
	freezeTimeout = 10 * time.Second
	// killAllTimeout bounds KillAll in a rollback; past it (or on any
	// other failure) the sandbox is stopped and a new one started.
	killAllTimeout = 10 * time.Second
	// stopTimeout bounds stopping a sandbox (destroy, restart, rollback's
	// escalation). The caller's cancellation does not cut a stop short:
	// a half-stopped sandbox would be worse than a slow one.
	stopTimeout = 30 * time.Second
)
