package remote

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"path"
	"time"

	"connectrpc.com/connect"

	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
	"github.com/turnbox/turnbox/remote/gen/turnbox/v1/turnboxv1connect"
)

// retrier is NewClient's interceptor. It tries a call again while the
// server cannot be reached, if the call is safe to repeat (idempotent):
// the reads (ListProcesses, AttachProcess and WaitProcess among them),
// DestroySession, RemoveImage, and ExecuteTool and ExecuteToolStream with a tool call
// id (the host runs a tool call id once). A stream is tried
// again only if it failed before its first event. The error that ends a
// call is turned into an *Error matching the sentinels the server named.
type retrier struct {
	attempts int
	delay    time.Duration
}

// idempotent reports whether the call of procedure with request msg may
// be repeated.
func idempotent(procedure string, msg any) bool {
	switch procedure {
	case turnboxv1connect.SandboxServiceGetSessionProcedure,
		turnboxv1connect.SandboxServiceListSessionsProcedure,
		turnboxv1connect.SandboxServiceAttachSessionProcedure,
		turnboxv1connect.SandboxServiceDestroySessionProcedure,
		turnboxv1connect.SandboxServiceListSnapshotsProcedure,
		turnboxv1connect.SandboxServiceHealthProcedure,
		turnboxv1connect.SandboxServiceCapabilitiesProcedure,
		turnboxv1connect.SandboxServicePublishPortProcedure,
		turnboxv1connect.SandboxServiceListPortsProcedure,
		turnboxv1connect.ProcessServiceListProcessesProcedure,
		turnboxv1connect.ProcessServiceAttachProcessProcedure,
		turnboxv1connect.ProcessServiceWaitProcessProcedure,
		turnboxv1connect.FilesServiceStatProcedure,
		turnboxv1connect.FilesServiceListDirProcedure,
		turnboxv1connect.FilesServiceWatchProcedure,
		turnboxv1connect.ImageServiceListImagesProcedure,
		turnboxv1connect.ImageServiceGetImageProcedure,
		turnboxv1connect.ImageServiceRemoveImageProcedure:
		return true
	case turnboxv1connect.SandboxServiceExecuteToolProcedure,
		turnboxv1connect.SandboxServiceExecuteToolStreamProcedure:
		r, ok := msg.(interface{ GetRequest() *turnboxv1.ToolRequest })
		return ok && r.GetRequest().GetToolCallId() != ""
	}
	return false
}

// again reports whether a call that failed with err on attempt may be
// tried once more, and sleeps before it.
func (r retrier) again(ctx context.Context, attempt int, err error) bool {
	return attempt < r.attempts && retryable(ctx, err) && r.backoff(ctx, attempt)
}

// WrapUnary implements connect.Interceptor.
func (r retrier) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		retry := idempotent(req.Spec().Procedure, req.Any())
		for attempt := 1; ; attempt++ {
			resp, err := next(ctx, req)
			if err == nil {
				return resp, nil
			}
			if !retry || !r.again(ctx, attempt, err) {
				return resp, fromConnectError(ctx, path.Base(req.Spec().Procedure), err)
			}
		}
	}
}

// WrapStreamingClient implements connect.Interceptor: server streams of
// idempotent calls are retried until their first event.
func (r retrier) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		if spec.StreamType != connect.StreamTypeServer {
			return conn
		}
		return &retryStream{StreamingClientConn: conn, r: r, ctx: ctx, spec: spec, next: next}
	}
}

// WrapStreamingHandler implements connect.Interceptor.
func (r retrier) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// retryStream is a server stream that opens itself again, resending its
// request, when it fails before its first event. Its methods are called
// from one goroutine (connect.ServerStreamForClient).
type retryStream struct {
	connect.StreamingClientConn // the current attempt
	r                           retrier
	ctx                         context.Context
	spec                        connect.Spec
	next                        connect.StreamingClientFunc
	msg                         any // the request, sent on every attempt
	attempt                     int
	received                    int
}

// Send implements connect.StreamingClientConn, remembering the request.
func (s *retryStream) Send(msg any) error {
	s.msg = msg
	return s.StreamingClientConn.Send(msg)
}

// Receive implements connect.StreamingClientConn.
func (s *retryStream) Receive(msg any) error {
	for {
		err := s.StreamingClientConn.Receive(msg)
		if err == nil {
			s.received++
			return nil
		}
		if s.attempt == 0 {
			s.attempt = 1
		}
		if errors.Is(err, io.EOF) && s.received == 0 {
			err = errNoEvent // our server always ends with a response or an error
		}
		if errors.Is(err, io.EOF) {
			return err
		}
		if s.received > 0 || s.msg == nil || !idempotent(s.spec.Procedure, s.msg) || !s.r.again(s.ctx, s.attempt, err) {
			return fromConnectError(s.ctx, path.Base(s.spec.Procedure), err)
		}
		s.attempt++
		s.reopen()
	}
}

// reopen replaces the failed attempt with a new stream carrying the same
// headers and request.
func (s *retryStream) reopen() {
	old := s.StreamingClientConn
	_ = old.CloseResponse()
	conn := s.next(s.ctx, s.spec)
	for k, v := range old.RequestHeader() {
		conn.RequestHeader()[k] = append([]string(nil), v...)
	}
	s.StreamingClientConn = conn
	// Errors surface in Receive (Send reports a failed request as io.EOF).
	_ = conn.Send(s.msg)
	_ = conn.CloseRequest()
}

// errNoEvent: a stream that ended cleanly before its first event.
var errNoEvent = connect.NewError(connect.CodeUnavailable, errors.New("stream ended without an event"))

// retryable reports whether a failed call may be tried again: the server
// was not reached or went away, and the call's context is still live.
func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var ce *connect.Error
	if errors.As(err, &ce) && len(ce.Details()) > 0 {
		return false // a service error: the server answered
	}
	return connect.CodeOf(err) == connect.CodeUnavailable || transportFailure(err)
}

// transportFailure reports whether err says the connection broke.
func transportFailure(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed)
}

// backoff sleeps before retry attempt+1; false if ctx ended first.
func (r retrier) backoff(ctx context.Context, attempt int) bool {
	d := r.delay << (attempt - 1)
	if d > 2*time.Second || d <= 0 {
		d = 2 * time.Second
	}
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
