package remote

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	"github.com/turnbox/turnbox/environment"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
	"github.com/turnbox/turnbox/remote/internal/wire"
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
	if e := (*Error)(nil); errors.As(err, &e) {
		return err // mapped already (by NewClient's interceptor)
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
				for _, s := range wire.Sentinels {
					if s.Reason == r {
						wraps = append(wraps, s.Err)
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
