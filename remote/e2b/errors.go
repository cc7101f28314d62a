package e2b

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"connectrpc.com/connect"

	"github.com/turnbox/turnbox/environment"
)

// apiError is the JSON body of an error answer, as E2B's clients read it.
type apiError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// writeJSONError answers status with E2B's JSON error body.
func writeJSONError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(apiError{Code: status, Message: msg})
}

// writeJSON answers status with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// httpStatus maps an error of the environment to the HTTP status E2B's
// clients turn into their own error types.
func httpStatus(err error) int {
	switch {
	case errors.Is(err, environment.ErrSessionNotFound), errors.Is(err, environment.ErrSnapshotNotFound),
		errors.Is(err, environment.ErrFileNotFound), errors.Is(err, environment.ErrProcessNotFound),
		errors.Is(err, environment.ErrImageNotFound):
		return http.StatusNotFound
	case errors.Is(err, environment.ErrInvalidArgument), errors.Is(err, environment.ErrPathEscapes):
		return http.StatusBadRequest
	case errors.Is(err, environment.ErrAlreadyExists), errors.Is(err, environment.ErrFileExists),
		errors.Is(err, environment.ErrBusy), errors.Is(err, environment.ErrNotActive),
		errors.Is(err, environment.ErrImageInUse):
		return http.StatusConflict
	case errors.Is(err, environment.ErrLimitExceeded):
		return http.StatusInsufficientStorage
	case errors.Is(err, environment.ErrCapabilityNotSupported):
		return http.StatusNotImplemented
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return http.StatusGatewayTimeout
	case errors.Is(err, environment.ErrClosed):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// connectError maps an error of the environment to the Connect code E2B's
// clients turn into their own error types (nil stays nil; a
// *connect.Error passes through).
func connectError(err error) error {
	if err == nil {
		return nil
	}
	if ce := (*connect.Error)(nil); errors.As(err, &ce) {
		return err
	}
	code := connect.CodeInternal
	switch {
	case errors.Is(err, environment.ErrSessionNotFound), errors.Is(err, environment.ErrFileNotFound),
		errors.Is(err, environment.ErrProcessNotFound), errors.Is(err, environment.ErrSnapshotNotFound):
		code = connect.CodeNotFound
	case errors.Is(err, environment.ErrInvalidArgument), errors.Is(err, environment.ErrPathEscapes):
		code = connect.CodeInvalidArgument
	case errors.Is(err, environment.ErrFileExists), errors.Is(err, environment.ErrAlreadyExists):
		code = connect.CodeAlreadyExists
	case errors.Is(err, environment.ErrNotActive), errors.Is(err, environment.ErrClosed):
		code = connect.CodeUnavailable
	case errors.Is(err, environment.ErrBusy):
		code = connect.CodeFailedPrecondition
	case errors.Is(err, environment.ErrLimitExceeded):
		code = connect.CodeResourceExhausted
	case errors.Is(err, environment.ErrCapabilityNotSupported):
		code = connect.CodeUnimplemented
	case errors.Is(err, context.DeadlineExceeded):
		code = connect.CodeDeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = connect.CodeCanceled
	}
	return connect.NewError(code, err)
}
