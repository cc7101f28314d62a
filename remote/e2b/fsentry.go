package e2b

import (
	"bufio"
	"context"
	"errors"
	"io"
	"io/fs"
	"path"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/turnbox/turnbox/environment"
	fspb "github.com/turnbox/turnbox/remote/gen/envd/filesystem"
)

// maxIDFileBytes bounds each read of the sandbox's /etc/passwd and
// /etc/group when naming owners (their content is the sandbox's).
const maxIDFileBytes = 1 << 20

// maxIDNames bounds the ids kept from each of those files.
const maxIDNames = 65536

// idNames names the uids and gids of one sandbox, read once per call
// from its /etc/passwd and /etc/group (through the confined file API);
// an id the files lack is named by its number.
type idNames struct {
	fsys   environment.FileSystem
	loaded bool
	users  map[uint32]string
	groups map[uint32]string
}

// newIDNames returns the names of fsys's users and groups, read on first
// use.
func newIDNames(fsys environment.FileSystem) *idNames { return &idNames{fsys: fsys} }

// load reads both files once; a file that cannot be read names nothing.
func (n *idNames) load(ctx context.Context) {
	if n.loaded {
		return
	}
	n.loaded = true
	n.users = readIDFile(ctx, n.fsys, "/etc/passwd")
	n.groups = readIDFile(ctx, n.fsys, "/etc/group")
}

// readIDFile maps the ids of an /etc/passwd or /etc/group file (third
// field) to their names (first field), the first line of an id winning.
func readIDFile(ctx context.Context, fsys environment.FileSystem, p string) map[uint32]string {
	out := map[uint32]string{}
	rc, _, err := fsys.Download(ctx, p)
	if err != nil {
		return out
	}
	defer rc.Close()
	sc := bufio.NewScanner(io.LimitReader(rc, maxIDFileBytes))
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() && len(out) < maxIDNames {
		f := strings.SplitN(sc.Text(), ":", 4)
		if len(f) < 3 || f[0] == "" {
			continue
		}
		id, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			continue
		}
		if _, dup := out[uint32(id)]; !dup {
			out[uint32(id)] = f[0]
		}
	}
	return out
}

// user names uid.
func (n *idNames) user(ctx context.Context, uid uint32) string {
	n.load(ctx)
	if name, ok := n.users[uid]; ok {
		return name
	}
	return strconv.FormatUint(uint64(uid), 10)
}

// group names gid.
func (n *idNames) group(ctx context.Context, gid uint32) string {
	n.load(ctx)
	if name, ok := n.groups[gid]; ok {
		return name
	}
	return strconv.FormatUint(uint64(gid), 10)
}

// entryInfo describes fi as envd does: the entry's name, its type, its
// absolute path, its size, its permission bits (mode) and their
// "-rw-r--r--" form (Go's fs.FileMode string, type letter included), its
// owner's and group's names, its modification time and a symlink's
// target.
func entryInfo(ctx context.Context, fi *environment.FileInfo, names *idNames) *fspb.EntryInfo {
	mode := fi.Mode
	ft := fspb.FileType_FILE_TYPE_UNSPECIFIED
	switch fi.Type {
	case environment.TypeFile:
		ft = fspb.FileType_FILE_TYPE_FILE
	case environment.TypeDir:
		ft, mode = fspb.FileType_FILE_TYPE_DIRECTORY, mode|fs.ModeDir
	case environment.TypeSymlink:
		ft, mode = fspb.FileType_FILE_TYPE_SYMLINK, mode|fs.ModeSymlink
	default:
		mode |= fs.ModeIrregular
	}
	e := &fspb.EntryInfo{
		Name:         path.Base(fi.Path),
		Type:         ft,
		Path:         fi.Path,
		Size:         fi.Size,
		Mode:         uint32(fi.Mode.Perm()),
		Permissions:  mode.String(),
		Owner:        names.user(ctx, fi.UID),
		Group:        names.group(ctx, fi.GID),
		ModifiedTime: timestamppb.New(fi.ModTime),
	}
	if fi.Type == environment.TypeSymlink {
		e.SymlinkTarget = &fi.LinkTarget
	}
	return e
}

// statEntry stats p and describes it.
func statEntry(ctx context.Context, fsys environment.FileSystem, p string, names *idNames) (*fspb.EntryInfo, error) {
	fi, err := fsys.Stat(ctx, p)
	if err != nil {
		return nil, err
	}
	return entryInfo(ctx, fi, names), nil
}

// errNotDir is a path that exists but is not a directory where one is
// needed.
var errNotDir = errors.New("not a directory")
