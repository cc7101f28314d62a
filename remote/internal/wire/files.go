package wire

import (
	"io/fs"
	"net/http"

	"connectrpc.com/connect"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/turnbox/turnbox/environment"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
)

// fileTypes maps the file types between the contract and the wire.
var fileTypes = map[environment.FileType]turnboxv1.FileType{
	environment.TypeFile:    turnboxv1.FileType_FILE_TYPE_FILE,
	environment.TypeDir:     turnboxv1.FileType_FILE_TYPE_DIR,
	environment.TypeSymlink: turnboxv1.FileType_FILE_TYPE_SYMLINK,
	environment.TypeOther:   turnboxv1.FileType_FILE_TYPE_OTHER,
}

// eventKinds maps the file event kinds between the contract and the wire.
var eventKinds = map[environment.FileEventKind]turnboxv1.FileEventKind{
	environment.EventCreate:   turnboxv1.FileEventKind_FILE_EVENT_KIND_CREATE,
	environment.EventWrite:    turnboxv1.FileEventKind_FILE_EVENT_KIND_WRITE,
	environment.EventRemove:   turnboxv1.FileEventKind_FILE_EVENT_KIND_REMOVE,
	environment.EventRename:   turnboxv1.FileEventKind_FILE_EVENT_KIND_RENAME,
	environment.EventOverflow: turnboxv1.FileEventKind_FILE_EVENT_KIND_OVERFLOW,
}

// special maps fs.FileMode's setuid, setgid and sticky to chmod's bits.
var special = []struct {
	mode fs.FileMode
	bits uint32
}{{fs.ModeSetuid, 0o4000}, {fs.ModeSetgid, 0o2000}, {fs.ModeSticky, 0o1000}}

// FileInfoToProto converts a FileInfo for the wire.
func FileInfoToProto(fi environment.FileInfo) *turnboxv1.FileInfo {
	mode := uint32(fi.Mode.Perm())
	for _, s := range special {
		if fi.Mode&s.mode != 0 {
			mode |= s.bits
		}
	}
	return &turnboxv1.FileInfo{Path: fi.Path, Type: fileTypes[fi.Type], Size: fi.Size, Mode: mode,
		Uid: fi.UID, Gid: fi.GID, ModTime: timestamppb.New(fi.ModTime), LinkTarget: fi.LinkTarget}
}

// FileInfoFromProto converts a FileInfo from the wire.
func FileInfoFromProto(p *turnboxv1.FileInfo) environment.FileInfo {
	mode := fs.FileMode(p.GetMode() & 0o777)
	for _, s := range special {
		if p.GetMode()&s.bits != 0 {
			mode |= s.mode
		}
	}
	fi := environment.FileInfo{Path: p.GetPath(), Type: environment.TypeOther, Size: p.GetSize(), Mode: mode,
		UID: p.GetUid(), GID: p.GetGid(), LinkTarget: p.GetLinkTarget()}
	if p.GetModTime() != nil {
		fi.ModTime = p.GetModTime().AsTime()
	}
	for k, v := range fileTypes {
		if v == p.GetType() {
			fi.Type = k
		}
	}
	return fi
}

// FileEventToProto converts a file event for the wire.
func FileEventToProto(ev environment.FileEvent) *turnboxv1.WatchResponse {
	return &turnboxv1.WatchResponse{Kind: eventKinds[ev.Kind], Path: ev.Path, OldPath: ev.OldPath, IsDir: ev.IsDir}
}

// FileEventFromProto converts a file event from the wire; ok is false for
// the stream's opening message (kind UNSPECIFIED).
func FileEventFromProto(p *turnboxv1.WatchResponse) (ev environment.FileEvent, ok bool) {
	for k, v := range eventKinds {
		if v == p.GetKind() {
			return environment.FileEvent{Kind: k, Path: p.GetPath(), OldPath: p.GetOldPath(), IsDir: p.GetIsDir()}, true
		}
	}
	return environment.FileEvent{}, false
}

// httpStatus is the HTTP status of each Connect code (as the Connect
// protocol maps them), for the upload and download streams.
var httpStatus = map[connect.Code]int{
	connect.CodeCanceled:           499,
	connect.CodeUnknown:            http.StatusInternalServerError,
	connect.CodeInvalidArgument:    http.StatusBadRequest,
	connect.CodeDeadlineExceeded:   http.StatusGatewayTimeout,
	connect.CodeNotFound:           http.StatusNotFound,
	connect.CodeAlreadyExists:      http.StatusConflict,
	connect.CodePermissionDenied:   http.StatusForbidden,
	connect.CodeResourceExhausted:  http.StatusTooManyRequests,
	connect.CodeFailedPrecondition: http.StatusPreconditionFailed,
	connect.CodeAborted:            http.StatusConflict,
	connect.CodeOutOfRange:         http.StatusBadRequest,
	connect.CodeUnimplemented:      http.StatusNotImplemented,
	connect.CodeInternal:           http.StatusInternalServerError,
	connect.CodeUnavailable:        http.StatusServiceUnavailable,
	connect.CodeDataLoss:           http.StatusInternalServerError,
	connect.CodeUnauthenticated:    http.StatusUnauthorized,
}

// HTTPStatus is the HTTP status that answers an upload or download failed
// with code.
func HTTPStatus(code connect.Code) int {
	if s, ok := httpStatus[code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// CodeOfHTTPStatus is the Connect code of a failed upload's or
// download's HTTP status (the first code mapped to it).
func CodeOfHTTPStatus(status int) connect.Code {
	best := connect.CodeUnknown
	for code, s := range httpStatus {
		if s == status && (best == connect.CodeUnknown || code < best) {
			best = code
		}
	}
	return best
}
