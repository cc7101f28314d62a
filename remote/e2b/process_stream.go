package e2b

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/turnbox/turnbox/environment"
	processpb "github.com/turnbox/turnbox/remote/gen/envd/process"
)

// follow streams process pid's output from offset through send, then its
// end event, with keepalive events while the stream is quiet. It returns
// when the process has ended (nil), or when ctx is done or send fails;
// neither affects the process, which runs on.
func (s *Server) follow(ctx context.Context, env environment.ProcessRunner, pid int, offset int64, h http.Header, send func(*processpb.ProcessEvent) error) error {
	out := &eventSender{send: send, last: time.Now()}
	stop := out.keepAlive(ctx, s.keepAliveInterval(h))
	defer stop()
	err := env.AttachProcess(ctx, pid, offset, func(ev environment.ProcessEvent) error {
		switch {
		case ev.Exit != nil:
			return out.emit(&processpb.ProcessEvent{Event: &processpb.ProcessEvent_End{End: endEvent(ev.Exit)}})
		case len(ev.Data) > 0:
			return out.data(ev.Stream, ev.Data)
		}
		// A gap (Dropped): envd's protocol cannot say so; the next
		// output follows.
		return nil
	})
	return connectError(err)
}

// eventSender serializes a stream's events (output and keepalives come
// from two goroutines) and remembers when it last sent one.
type eventSender struct {
	mu   sync.Mutex
	send func(*processpb.ProcessEvent) error
	last time.Time
}

// emit sends one event.
func (e *eventSender) emit(ev *processpb.ProcessEvent) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.last = time.Now()
	return e.send(ev)
}

// data sends output of one stream in events of at most maxOutputChunk
// bytes.
func (e *eventSender) data(stream string, b []byte) error {
	for len(b) > 0 {
		n := min(len(b), maxOutputChunk)
		ev := &processpb.ProcessEvent_DataEvent{}
		switch stream {
		case environment.StreamStderr:
			ev.Output = &processpb.ProcessEvent_DataEvent_Stderr{Stderr: b[:n]}
		case environment.StreamPTY:
			ev.Output = &processpb.ProcessEvent_DataEvent_Pty{Pty: b[:n]}
		default:
			ev.Output = &processpb.ProcessEvent_DataEvent_Stdout{Stdout: b[:n]}
		}
		if err := e.emit(&processpb.ProcessEvent{Event: &processpb.ProcessEvent_Data{Data: ev}}); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// keepAlive sends a keepalive event whenever nothing was sent for
// interval, until ctx is done or the returned stop is called; stop
// returns once the sender's goroutine has quit (the stream must not be
// used after its handler returns).
func (e *eventSender) keepAlive(ctx context.Context, interval time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval / 2)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			e.mu.Lock()
			var err error
			if time.Since(e.last) >= interval {
				e.last = time.Now()
				err = e.send(&processpb.ProcessEvent{Event: &processpb.ProcessEvent_Keepalive{Keepalive: &processpb.ProcessEvent_KeepAlive{}}})
			}
			e.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// startEvent is the first event of a followed process.
func startEvent(pid int) *processpb.ProcessEvent {
	return &processpb.ProcessEvent{Event: &processpb.ProcessEvent_Start{Start: &processpb.ProcessEvent_StartEvent{Pid: uint32(pid)}}}
}

// endEvent describes how a process ended as envd does: an exit is
// exited with its code and status "exit status N"; a death by signal is
// not exited, code -1, status "signal: <name>". Every end but exit
// status 0 carries an error (the SDKs raise CommandExitError with it for
// a code other than 0); an end the host caused (timeout, rollback,
// destroy) says so in the error.
func endEvent(x *environment.ProcessExit) *processpb.ProcessEvent_EndEvent {
	end := &processpb.ProcessEvent_EndEvent{ExitCode: int32(x.Code), Exited: true, Status: fmt.Sprintf("exit status %d", x.Code)}
	if x.Signal != 0 {
		end.ExitCode, end.Exited = -1, false
		end.Status = "signal: " + syscall.Signal(x.Signal).String()
	}
	msg := ""
	if end.ExitCode != 0 {
		msg = end.Status
	}
	switch {
	case x.TimedOut:
		msg = joinReason(msg, "the process's timeout ran out")
	case x.OOMKilled:
		msg = joinReason(msg, "killed for lack of memory")
	case x.Reason != "":
		msg = joinReason(msg, x.Reason)
	}
	if msg != "" {
		end.Error = &msg
	}
	return end
}

// joinReason appends reason to msg as "msg (reason)".
func joinReason(msg, reason string) string {
	if msg == "" {
		return reason
	}
	return msg + " (" + reason + ")"
}
