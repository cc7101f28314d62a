package e2b

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"path"
	"strconv"
	"strings"

	"github.com/turnbox/turnbox/environment"
)

// DefaultUser is the sandbox user E2B's clients assume when they name
// none: envd 0.4.0 and later run requests as it.
const DefaultUser = "user"

// requestUser is the user an envd request runs as: the name in its
// "Authorization: Basic base64(<user>:)" header, else DefaultUser.
func requestUser(h http.Header) (string, error) {
	auth := h.Get("Authorization")
	if auth == "" {
		return DefaultUser, nil
	}
	enc, ok := strings.CutPrefix(auth, "Basic ")
	if !ok {
		return "", fmt.Errorf("%w: authorization header is not Basic", environment.ErrInvalidArgument)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(enc))
	if err != nil {
		return "", fmt.Errorf("%w: authorization header: %v", environment.ErrInvalidArgument, err)
	}
	name, _, _ := strings.Cut(string(raw), ":")
	if name == "" {
		return DefaultUser, nil
	}
	if len(name) > environment.MaxProcessUserBytes || strings.ContainsAny(name, "\x00/ \n:") {
		return "", fmt.Errorf("%w: user %q", environment.ErrInvalidArgument, name)
	}
	return name, nil
}

// account is a user of the sandbox as its /etc/passwd describes it.
type account struct {
	Name     string
	UID, GID uint32
	Home     string
}

// maxPasswdBytes bounds the /etc/passwd read from a sandbox (its content
// is the sandbox's: an attacker's).
const maxPasswdBytes = 1 << 20

// lookupAccount finds user name in the sandbox's /etc/passwd (read
// through the confined file API, at most maxPasswdBytes). root is always
// known; a user the file lacks is ErrInvalidArgument.
func lookupAccount(ctx context.Context, fsys environment.FileSystem, name string) (account, error) {
	if name == "root" {
		return account{Name: "root", Home: "/root"}, nil
	}
	rc, _, err := fsys.Download(ctx, "/etc/passwd")
	if err != nil {
		return account{}, fmt.Errorf("%w: user %q: reading /etc/passwd: %v", environment.ErrInvalidArgument, name, err)
	}
	defer rc.Close()
	sc := bufio.NewScanner(io.LimitReader(rc, maxPasswdBytes))
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) < 7 || f[0] != name {
			continue
		}
		uid, err1 := strconv.ParseUint(f[2], 10, 32)
		gid, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 != nil || err2 != nil || !path.IsAbs(f[5]) {
			break
		}
		return account{Name: name, UID: uint32(uid), GID: uint32(gid), Home: path.Clean(f[5])}, nil
	}
	return account{}, fmt.Errorf("%w: no user %q in the sandbox's /etc/passwd", environment.ErrInvalidArgument, name)
}

// resolvePath makes p absolute as envd does: relative to the user's home
// (an empty p is the home itself).
func resolvePath(home, p string) string {
	if p == "" {
		return home
	}
	if path.IsAbs(p) {
		return p
	}
	return path.Join(home, p)
}
