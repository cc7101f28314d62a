package agent

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/turnbox/turnbox/container"
)

// A sandbox restored from a memory checkpoint (gVisor) brings back its
// agent as it was at the checkpoint: mid-way through its connection,
// with the commands of the old connection still registered under their
// request ids, and with no new Hello. The host talks to it over new
// pipes with a client made by NewRestoredClient, whose request ids
// continue after the old connection's, so that they never collide with
// an id the agent still knows and frames for the old ids (output of the
// old connection's commands) are dropped as late frames rather than
// taken for a protocol violation.
//
// The bytes in flight in the old pipes are not part of the checkpoint.
// Quiesce makes sure that none of the host's frames is half-read by the
// agent at the checkpoint (it would read the rest from the new pipe).

// NewRestoredClient is NewClient for an agent restored from a checkpoint
// taken while the previous client had issued request ids up to lastID
// (its LastRequestID, read after the checkpoint).
func NewRestoredClient(r io.Reader, w io.Writer, lastID uint64) *Client {
	c := newClient(r, w)
	c.nextID = lastID
	go c.readLoop()
	return c
}

// LastRequestID returns the highest request id the client has issued.
func (c *Client) LastRequestID() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nextID
}

// Quiesce runs fn once the agent has read every frame the host wrote and
// while the host writes no other: it holds the frame writer, sends a
// Ping and waits (bounded by ctx, or AnswerTimeout) for its reply, then
// calls fn and releases the writer. fn freezes the agent (a sandbox
// pause), so that a checkpoint taken afterwards holds no half-read
// frame. Writers that come meanwhile wait, at most WriteTimeout, so fn
// must be short. Lock order: the frame writer's lock is taken after
// c.mu is released and held while waiting for the reply, which the
// reader delivers without taking it.
func (c *Client) Quiesce(ctx context.Context, fn func() error) error {
	id, cl := c.register()
	defer c.unregister(id)
	c.fw.mu.Lock()
	defer c.fw.mu.Unlock()
	if c.fw.err != nil {
		return fmt.Errorf("agent: write: %v: %w", c.fw.err, container.ErrNotRunning)
	}
	t := time.AfterFunc(c.bounds.write, func() {
		c.protocolError(fmt.Errorf("agent: a frame write blocked for %v (the agent stopped reading)", c.bounds.write))
	})
	_, err := c.fw.w.Write(newFrame(MsgPing, id).bytes())
	t.Stop()
	if err != nil {
		c.fw.err = err
		c.fail(fmt.Errorf("agent: write: %v: %w", err, container.ErrNotRunning))
		return c.Err()
	}
	msg, err := c.awaitReply(ctx, cl, MsgPing, c.bounds.answer)
	if err == nil && msg != "" {
		err = fmt.Errorf("agent: %v: %s", MsgPing, msg)
	}
	if err != nil {
		return err
	}
	return fn()
}
