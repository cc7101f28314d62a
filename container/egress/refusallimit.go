package egress

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Go-side bounds of the refusal log.
const (
	// logBurst refusal lines are logged per session per logEvery at
	// most (packets and DNS names together).
	logBurst, logEvery = 10, time.Second
)

// refusalLogs is one session's refusal log: the Go-side rate limit of
// its "network refused" lines and the accounting of the refusals that
// got none, which summarize reports.
type refusalLogs struct {
	mu    sync.Mutex // guards all below
	since time.Time  // start of the current window
	inWin int        // lines logged in it
	lines map[string]uint64
	prev  map[string]uint64 // counts at the previous summarize
	told  map[string]uint64 // refusals reported as not logged
}

// allow takes a line of the current window for reason, if one is left.
func (l *refusalLogs) allow(reason string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.since) >= logEvery {
		l.since, l.inWin = now, 0
	}
	if l.inWin >= logBurst {
		return false
	}
	l.inWin++
	if l.lines == nil {
		l.lines = map[string]uint64{}
	}
	l.lines[reason]++
	return true
}

// packet logs a refused packet's record, rate limited.
func (l *refusalLogs) packet(log *slog.Logger, id string, rec logRecord, now time.Time) {
	if !l.allow(rec.reason, now) {
		return
	}
	level := slog.LevelInfo
	if rec.reason == ReasonSpoof {
		level = slog.LevelWarn
	}
	dst := ""
	if rec.dst.IsValid() {
		dst = rec.dst.String()
	}
	log.Log(context.Background(), level, "network refused", "session", id, "reason", rec.reason,
		"dst", dst, "port", rec.port, "proto", rec.proto)
}

// name logs a refused DNS name, rate limited.
func (l *refusalLogs) name(log *slog.Logger, id, name string, now time.Time) {
	if l.allow(ReasonDNS, now) {
		log.Info("network refused", "session", id, "reason", ReasonDNS, "name", name, "proto", "dns")
	}
}

// summarize logs, for each reason, how many refusals got no line
// (dropped by either rate limit, or lost on the way), given the
// session's refusal counts now. It compares with the counts of the
// previous call, a second old: the kernel counts a packet before its
// record reaches readNFLOG, and a second is far more than that takes,
// so that a summary never reports a refusal whose line is still on its
// way. Called by the summary loop only, once per logEvery.
func (l *refusalLogs) summarize(log *slog.Logger, id string, counts map[string]uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.told == nil {
		l.told = map[string]uint64{}
	}
	for r, c := range l.prev {
		if c > l.lines[r]+l.told[r] {
			n := c - l.lines[r] - l.told[r]
			log.Warn("network refusals not logged", "session", id, "reason", r, "suppressed", n, "total", c)
			l.told[r] += n
		}
	}
	l.prev = counts
}
