package remote

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	"github.com/turnbox/turnbox/environment"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
)

// Errors of the transport itself, returned by the client beside (never
// instead of) the environment sentinels.
var (
	// ErrUnauthenticated: the server rejected the call's bearer token
	// (missing or wrong). Connect code Unauthenticated.
	ErrUnauthenticated = errors.New("remote: unauthenticated")
	// ErrUnavailable: the server could not be reached or went away during
	// the call. Connect code Unavailable.
	ErrUnavailable = errors.New("remote: server unavailable")
)

// sentinel ties an environment sentinel to its wire reason and status code.
type sentinel struct {
	err    error
	reason turnboxv1.ErrorReason
	code   connect.Code
}

// sentinels is ordered by precedence: the first that an error matches
// chooses the status code (a call on a destroyed session matches both
// ErrNotActive and ErrSessionNotFound and is FailedPrecondition).
var sentinels = []sentinel{
	{environment.ErrCapabilityNotSupported, turnboxv1.ErrorReason_ERROR_REASON_CAPABILITY_NOT_SUPPORTED, connect.CodeUnimplemented},
	{environment.ErrClosed, turnboxv1.ErrorReason_ERROR_REASON_CLOSED, connect.CodeUnavailable},
	{environment.ErrPathEscapes, turnboxv1.ErrorReason_ERROR_REASON_PATH_ESCAPES, connect.CodeInvalidArgument},
	{environment.ErrUnknownTool, turnboxv1.ErrorReason_ERROR_REASON_UNKNOWN_TOOL, connect.CodeInvalidArgument},
	{environment.ErrInvalidArgument, turnboxv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT, connect.CodeInvalidArgument},
	{environment.ErrAlreadyExists, turnboxv1.ErrorReason_ERROR_REASON_ALREADY_EXISTS, connect.CodeAlreadyExists},
	{environment.ErrLimitExceeded, turnboxv1.ErrorReason_ERROR_REASON_LIMIT_EXCEEDED, connect.CodeResourceExhausted},
	{environment.ErrBusy, turnboxv1.ErrorReason_ERROR_REASON_BUSY, connect.CodeAborted},
	{environment.ErrNotActive, turnboxv1.ErrorReason_ERROR_REASON_NOT_ACTIVE, connect.CodeFailedPrecondition},
	{environment.ErrSessionNotFound, turnboxv1.ErrorReason_ERROR_REASON_SESSION_NOT_FOUND, connect.CodeNotFound},
	{environment.ErrSnapshotNotFound, turnboxv1.ErrorReason_ERROR_REASON_SNAPSHOT_NOT_FOUND, connect.CodeNotFound},
	{environment.ErrNotBound, turnboxv1.ErrorReason_ERROR_REASON_NOT_BOUND, connect.CodeFailedPrecondition},
	{environment.ErrAlreadyBound, turnboxv1.ErrorReason_ERROR_REASON_ALREADY_BOUND, connect.CodeFailedPrecondition},
}

// toConnectError turns a service error into a Connect error whose code is
// the closest standard one and whose ErrorInfo detail lists every sentinel
// err matches. A nil error stays nil; a Connect error passes through.
func toConnectError(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	code := connect.CodeUnknown
	info := &turnboxv1.ErrorInfo{}
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			if len(info.Reasons) == 0 {
				code = s.code
			}
			info.Reasons = append(info.Reasons, s.reason)
		}
	}
	if len(info.Reasons) == 0 {
		switch {
		case errors.Is(err, context.Canceled):
			code = connect.CodeCanceled
		case errors.Is(err, context.DeadlineExceeded):
			code = connect.CodeDeadlineExceeded
		}
	}
	out := connect.NewError(code, err)
	if len(info.Reasons) > 0 {
		if d, derr := connect.NewErrorDetail(info); derr == nil {
			out.AddDetail(d)
		}
	}
	return out
}

// Error is an error the client got from the server: Error returns the
// server's message, and errors.Is matches every sentinel the server named
// (and, without a detail, the one implied by the status code), as well as
// the context's error when the call's context ended. errors.As finds the
// underlying *connect.Error.
type Error struct {
	msg   string
	wraps []error
}

// Error implements error.
func (e *Error) Error() string { return e.msg }

// Unwrap returns the sentinels and the Connect error.
func (e *Error) Unwrap() []error { return e.wraps }

// fromConnectError maps an error from a generated client back to the
// sentinels named in its ErrorInfo detail. ctx is the call's context.
func fromConnectError(ctx context.Context, procedure string, err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		if ctx.Err() != nil {
			return &Error{msg: fmt.Sprintf("%s: %v", procedure, err), wraps: []error{err, ctx.Err()}}
		}
		return err
	}
	var wraps []error
	for _, d := range ce.Details() {
		v, derr := d.Value()
		if derr != nil {
			continue
		}
		if info, ok := v.(*turnboxv1.ErrorInfo); ok {
			for _, r := range info.GetReasons() {
				for _, s := range sentinels {
					if s.reason == r {
						wraps = append(wraps, s.err)
					}
				}
			}
		}
	}
	msg := ce.Message()
	if len(wraps) == 0 {
		// No detail: a failure outside the service (auth, limits, the
		// transport, a proxy). Name it by the code.
		switch code := ce.Code(); {
		case transportFailure(err):
			wraps = append(wraps, ErrUnavailable)
		case code == connect.CodeUnauthenticated || code == connect.CodePermissionDenied:
			wraps = append(wraps, ErrUnauthenticated)
		case code == connect.CodeUnavailable:
			wraps = append(wraps, ErrUnavailable)
		case code == connect.CodeResourceExhausted:
			wraps = append(wraps, environment.ErrLimitExceeded)
		case code == connect.CodeInvalidArgument:
			wraps = append(wraps, environment.ErrInvalidArgument)
		}
		msg = fmt.Sprintf("%s: %s", procedure, ce.Error())
	}
	wraps = append(wraps, ce)
	if ctx.Err() != nil {
		wraps = append(wraps, ctx.Err())
	}
	return &Error{msg: msg, wraps: wraps}
}
