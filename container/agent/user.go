package agent

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// errInvalid marks a request the agent refuses as invalid in this
// sandbox (an unknown user): MsgFailed then carries FailInvalid.
var errInvalid = errors.New("invalid request")

// maxAccountFile bounds how much of /etc/passwd or /etc/group the agent
// reads: the files belong to the sandbox's user.
const maxAccountFile = 4 << 20

// maxGroups bounds a user's supplementary groups (the kernel's
// NGROUPS_MAX is 65536).
const maxGroups = 65536

// credential is the user a command runs as.
type credential struct {
	uid, gid uint32
	groups   []uint32 // supplementary groups, the primary one included
	name     string   // "" if the uid has no /etc/passwd entry
	home     string
}

// env returns HOME, USER and LOGNAME for the credential.
func (c *credential) env() []string {
	env := []string{"HOME=" + c.home}
	if c.name != "" {
		env = append(env, "USER="+c.name, "LOGNAME="+c.name)
	}
	return env
}

// account is one line of /etc/passwd or /etc/group split on ':'.
type account []string

// readAccounts returns the entries of an /etc/passwd-like file that have
// at least fields fields; a missing file has none.
func readAccounts(path string, fields int) ([]account, error) {
	// O_NONBLOCK: a FIFO planted as /etc/passwd must not hang the agent.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []account
	sc := bufio.NewScanner(io.LimitReader(f, maxAccountFile))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		if a := account(strings.Split(line, ":")); len(a) >= fields {
			out = append(out, a)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return out, nil
}

// parseID parses a numeric uid or gid; ok is false if s is not one.
func parseID(s string) (uint32, bool) {
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil || v == 1<<32-1 { // (uid_t)-1 means "unchanged"
		return 0, false
	}
	return uint32(v), true
}

// resolveUser resolves spec, "user" or "user:group" where each part is a
// name or a number, in the passwd and group files of etcDir. A user not
// in passwd may be given by number: its group is then its uid (unless
// given) and its home "/". Unknown names fail with errInvalid.
func resolveUser(etcDir, spec string) (*credential, error) {
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	if userPart == "" || (hasGroup && groupPart == "") {
		return nil, fmt.Errorf("%w: user %q: want name, uid or uid:gid", errInvalid, spec)
	}
	passwd, err := readAccounts(filepath.Join(etcDir, "passwd"), 7)
	if err != nil {
		return nil, err
	}
	groups, err := readAccounts(filepath.Join(etcDir, "group"), 4)
	if err != nil {
		return nil, err
	}
	c := &credential{home: "/"}
	uid, numeric := parseID(userPart)
	var entry account
	for _, a := range passwd {
		if (numeric && a[2] == strconv.FormatUint(uint64(uid), 10)) || (!numeric && a[0] == userPart) {
			entry = a
			break
		}
	}
	switch {
	case entry != nil:
		id, ok1 := parseID(entry[2])
		gid, ok2 := parseID(entry[3])
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("%w: user %q: malformed passwd entry", errInvalid, spec)
		}
		c.uid, c.gid, c.name, c.home = id, gid, entry[0], entry[5]
		if c.home == "" {
			c.home = "/"
		}
	case numeric:
		c.uid, c.gid = uid, uid
	default:
		return nil, fmt.Errorf("%w: unknown user %q (not in %s)", errInvalid, userPart, filepath.Join(etcDir, "passwd"))
	}
	if hasGroup {
		gid, err := resolveGroup(groups, groupPart)
		if err != nil {
			return nil, err
		}
		c.gid, c.groups = gid, []uint32{gid}
		return c, nil
	}
	c.groups = memberOf(groups, c.name, c.gid)
	return c, nil
}

// resolveGroup resolves a group name or number.
func resolveGroup(groups []account, spec string) (uint32, error) {
	if gid, ok := parseID(spec); ok {
		return gid, nil
	}
	for _, g := range groups {
		if g[0] == spec {
			if gid, ok := parseID(g[2]); ok {
				return gid, nil
			}
		}
	}
	return 0, fmt.Errorf("%w: unknown group %q", errInvalid, spec)
}

// memberOf returns gid and the groups listing name as a member.
func memberOf(groups []account, name string, gid uint32) []uint32 {
	out := []uint32{gid}
	if name == "" {
		return out
	}
	for _, g := range groups {
		if len(out) >= maxGroups {
			break
		}
		id, ok := parseID(g[2])
		if !ok || id == gid {
			continue
		}
		for _, m := range strings.Split(g[3], ",") {
			if m == name {
				out = append(out, id)
				break
			}
		}
	}
	return out
}
