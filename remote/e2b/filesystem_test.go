package e2b

import (
	"errors"
	"fmt"
	"testing"

	"connectrpc.com/connect"

	"github.com/turnbox/turnbox/environment"
	fspb "github.com/turnbox/turnbox/remote/gen/envd/filesystem"
)

// fsWantCode fails unless err is a Connect error with code.
func fsWantCode(t *testing.T, what string, err error, code connect.Code) {
	t.Helper()
	if connect.CodeOf(err) != code {
		t.Errorf("%s: err = %v, want code %v", what, err, code)
	}
}

// TestFilesystemService drives Stat, MakeDir, ListDir, Move and Remove in
// both encodings, as the sandbox's "user": relative paths are relative to
// /home/user, directories made are the user's, entries carry envd's
// fields, and a symlink out of the root is InvalidArgument.
func TestFilesystemService(t *testing.T) {
	r := newFSRig(t, environment.Limits{})
	fsSh(t, r.env, "ln -s /etc /home/user/etclink && ln -s ../../.. /home/user/up && printf hello > /home/user/f.txt && chown 1000:1000 /home/user/f.txt && chmod 640 /home/user/f.txt")
	for _, json := range []bool{true, false} {
		t.Run(fmt.Sprintf("json=%v", json), func(t *testing.T) { fsServiceCalls(t, r, json) })
	}
}

// fsServiceCalls is TestFilesystemService in one encoding.
func fsServiceCalls(t *testing.T, r *fsRig, json bool) {
	c := r.fsClient(r.id, json)
	ctx := t.Context()
	dir := fmt.Sprintf("d%v", json)
	mk, err := c.MakeDir(ctx, connect.NewRequest(&fspb.MakeDirRequest{Path: dir + "/a/b"}))
	if err != nil {
		t.Fatalf("MakeDir: %v", err)
	}
	if e := mk.Msg.GetEntry(); e.GetPath() != "/home/user/"+dir+"/a/b" || e.GetType() != fspb.FileType_FILE_TYPE_DIRECTORY ||
		e.GetName() != "b" || e.GetOwner() != "user" || e.GetPermissions() != "drwxr-xr-x" || e.GetMode() != 0o755 {
		t.Errorf("MakeDir entry = %v", e)
	}
	for _, p := range []string{dir, dir + "/a", dir + "/a/b"} {
		if fi, err := r.env.Stat(ctx, "/home/user/"+p); err != nil || fi.UID != 1000 || fi.GID != 1000 {
			t.Errorf("%s after MakeDir: %+v %v, want uid and gid 1000", p, fi, err)
		}
	}
	_, err = c.MakeDir(ctx, connect.NewRequest(&fspb.MakeDirRequest{Path: dir + "/a"}))
	fsWantCode(t, "MakeDir of an existing directory", err, connect.CodeAlreadyExists)
	_, err = c.MakeDir(ctx, connect.NewRequest(&fspb.MakeDirRequest{Path: "f.txt"}))
	fsWantCode(t, "MakeDir over a file", err, connect.CodeInvalidArgument)

	st, err := c.Stat(ctx, connect.NewRequest(&fspb.StatRequest{Path: "/home/user/f.txt"}))
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if e := st.Msg.GetEntry(); e.GetName() != "f.txt" || e.GetSize() != 5 || e.GetMode() != 0o640 || e.GetPermissions() != "-rw-r-----" ||
		e.GetOwner() != "user" || e.GetGroup() != "user" || e.GetType() != fspb.FileType_FILE_TYPE_FILE || e.GetModifiedTime().GetSeconds() == 0 {
		t.Errorf("Stat(f.txt) = %v", e)
	}
	st, err = c.Stat(ctx, connect.NewRequest(&fspb.StatRequest{Path: "etclink"}))
	if e := st.Msg.GetEntry(); err != nil || e.GetType() != fspb.FileType_FILE_TYPE_SYMLINK || e.GetSymlinkTarget() != "/etc" {
		t.Errorf("Stat(etclink) = %v %v, want a symlink to /etc", e, err)
	}
	_, err = c.Stat(ctx, connect.NewRequest(&fspb.StatRequest{Path: "missing"}))
	fsWantCode(t, "Stat(missing)", err, connect.CodeNotFound)
	_, err = c.Stat(ctx, connect.NewRequest(&fspb.StatRequest{Path: "etclink/passwd"}))
	fsWantCode(t, "Stat through a link out of the root", err, connect.CodeInvalidArgument)
	_, err = c.Stat(ctx, connect.NewRequest(&fspb.StatRequest{Path: "up/etc/passwd"}))
	fsWantCode(t, "Stat through a relative link out of the root", err, connect.CodeInvalidArgument)

	ls, err := c.ListDir(ctx, connect.NewRequest(&fspb.ListDirRequest{Path: dir}))
	if err != nil || len(ls.Msg.GetEntries()) != 1 || ls.Msg.GetEntries()[0].GetPath() != "/home/user/"+dir+"/a" {
		t.Errorf("ListDir(depth 0) = %v %v, want only /home/user/%s/a", ls.Msg.GetEntries(), err, dir)
	}
	ls, err = c.ListDir(ctx, connect.NewRequest(&fspb.ListDirRequest{Path: dir, Depth: 2}))
	if err != nil || len(ls.Msg.GetEntries()) != 2 || ls.Msg.GetEntries()[1].GetPath() != "/home/user/"+dir+"/a/b" {
		t.Errorf("ListDir(depth 2) = %v %v, want a and a/b", ls.Msg.GetEntries(), err)
	}

	mv, err := c.Move(ctx, connect.NewRequest(&fspb.MoveRequest{Source: dir + "/a", Destination: "/home/user/" + dir + "/moved"}))
	if err != nil || mv.Msg.GetEntry().GetPath() != "/home/user/"+dir+"/moved" || mv.Msg.GetEntry().GetType() != fspb.FileType_FILE_TYPE_DIRECTORY {
		t.Errorf("Move = %v %v", mv.Msg.GetEntry(), err)
	}
	if _, err := r.env.Stat(ctx, "/home/user/"+dir+"/a"); !errors.Is(err, environment.ErrFileNotFound) {
		t.Errorf("the moved directory is still there: %v", err)
	}
	if _, err := c.Remove(ctx, connect.NewRequest(&fspb.RemoveRequest{Path: dir})); err != nil {
		t.Fatalf("Remove of a non-empty directory: %v", err)
	}
	if _, err := r.env.Stat(ctx, "/home/user/"+dir); !errors.Is(err, environment.ErrFileNotFound) {
		t.Errorf("Remove left %s: %v", dir, err)
	}
	if _, err := c.Remove(ctx, connect.NewRequest(&fspb.RemoveRequest{Path: dir})); err != nil {
		t.Errorf("Remove of a missing path: %v, want none (as envd)", err)
	}
	_, err = c.Remove(ctx, connect.NewRequest(&fspb.RemoveRequest{}))
	fsWantCode(t, "Remove without a path (the home)", err, connect.CodeInvalidArgument)
	_, err = c.Move(ctx, connect.NewRequest(&fspb.MoveRequest{Destination: "elsewhere"}))
	fsWantCode(t, "Move without a source (the home)", err, connect.CodeInvalidArgument)
	if _, err := r.env.Stat(ctx, "/home/user/f.txt"); err != nil {
		t.Errorf("the home lost f.txt: %v", err)
	}
	_, err = c.Remove(ctx, connect.NewRequest(&fspb.RemoveRequest{Path: "etclink/passwd"}))
	fsWantCode(t, "Remove through a link out of the root", err, connect.CodeInvalidArgument)
}
