package wire

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	"github.com/turnbox/turnbox/environment"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
)

// Sentinel ties an environment sentinel error to its wire reason and
// status code.
type Sentinel struct {
	Err    error
	Reason turnboxv1.ErrorReason
	Code   connect.Code
}

// Sentinels is ordered by precedence: the first that an error matches
// chooses the status code, so that each cause has one code on every
// method: a call on an unknown or destroyed session matches both
// ErrSessionNotFound and ErrNotActive and is NotFound (a paused or failed
// session, ErrNotActive alone, is FailedPrecondition). docs/remote.md
// lists the table.
var Sentinels = []Sentinel{
	{environment.ErrCapabilityNotSupported, turnboxv1.ErrorReason_ERROR_REASON_CAPABILITY_NOT_SUPPORTED, connect.CodeUnimplemented},
	{environment.ErrClosed, turnboxv1.ErrorReason_ERROR_REASON_CLOSED, connect.CodeUnavailable},
	{environment.ErrPathEscapes, turnboxv1.ErrorReason_ERROR_REASON_PATH_ESCAPES, connect.CodeInvalidArgument},
	{environment.ErrUnknownTool, turnboxv1.ErrorReason_ERROR_REASON_UNKNOWN_TOOL, connect.CodeInvalidArgument},
	{environment.ErrInvalidArgument, turnboxv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT, connect.CodeInvalidArgument},
	{environment.ErrAlreadyExists, turnboxv1.ErrorReason_ERROR_REASON_ALREADY_EXISTS, connect.CodeAlreadyExists},
	{environment.ErrLimitExceeded, turnboxv1.ErrorReason_ERROR_REASON_LIMIT_EXCEEDED, connect.CodeResourceExhausted},
	{environment.ErrBusy, turnboxv1.ErrorReason_ERROR_REASON_BUSY, connect.CodeAborted},
	{environment.ErrSessionNotFound, turnboxv1.ErrorReason_ERROR_REASON_SESSION_NOT_FOUND, connect.CodeNotFound},
	{environment.ErrNotActive, turnboxv1.ErrorReason_ERROR_REASON_NOT_ACTIVE, connect.CodeFailedPrecondition},
	{environment.ErrSnapshotNotFound, turnboxv1.ErrorReason_ERROR_REASON_SNAPSHOT_NOT_FOUND, connect.CodeNotFound},
	{environment.ErrProcessNotFound, turnboxv1.ErrorReason_ERROR_REASON_PROCESS_NOT_FOUND, connect.CodeNotFound},
	{environment.ErrNotBound, turnboxv1.ErrorReason_ERROR_REASON_NOT_BOUND, connect.CodeFailedPrecondition},
	{environment.ErrAlreadyBound, turnboxv1.ErrorReason_ERROR_REASON_ALREADY_BOUND, connect.CodeFailedPrecondition},
	{environment.ErrFileNotFound, turnboxv1.ErrorReason_ERROR_REASON_FILE_NOT_FOUND, connect.CodeNotFound},
	{environment.ErrFileExists, turnboxv1.ErrorReason_ERROR_REASON_FILE_EXISTS, connect.CodeAlreadyExists},
	{environment.ErrWatchEnded, turnboxv1.ErrorReason_ERROR_REASON_WATCH_ENDED, connect.CodeAborted},
	{environment.ErrImageNotFound, turnboxv1.ErrorReason_ERROR_REASON_IMAGE_NOT_FOUND, connect.CodeNotFound},
	{environment.ErrImageInUse, turnboxv1.ErrorReason_ERROR_REASON_IMAGE_IN_USE, connect.CodeFailedPrecondition},
	{environment.ErrPortNotPublished, turnboxv1.ErrorReason_ERROR_REASON_PORT_NOT_PUBLISHED, connect.CodeNotFound},
	{environment.ErrPortRefused, turnboxv1.ErrorReason_ERROR_REASON_PORT_REFUSED, connect.CodeUnavailable},
}

// ToConnectError turns a service error into a Connect error whose code is
// the closest standard one and whose ErrorInfo detail lists every sentinel
// err matches. A nil error stays nil; a Connect error passes through.
func ToConnectError(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	code := connect.CodeUnknown
	info := &turnboxv1.ErrorInfo{}
	for _, s := range Sentinels {
		if errors.Is(err, s.Err) {
			if len(info.Reasons) == 0 {
				code = s.Code
			}
			info.Reasons = append(info.Reasons, s.Reason)
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
