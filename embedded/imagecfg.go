package embedded

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"path"
	"regexp"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/rootfs"
	"github.com/turnbox/turnbox/embedded/ledger"
	"github.com/turnbox/turnbox/environment"
)

// Image config: what a session's commands inherit from its image's
// record (OCI ENV, WORKDIR and USER; entrypoint and cmd are never run).
// A new session resolves the record once, at create, into its ledger
// record's ImageDefaults, which its restarts and forks keep whatever
// later happens to the image. The record may come from anyone's
// registry: every value is checked, and a bad one is dropped with a
// warning rather than failing the create.
//
// Precedence, lowest first: the runtime's base environment (PATH, HOME,
// TERM), the user's HOME, USER and LOGNAME, the image's ENV, the
// session's Env, a process's own Env; PWD and TURNBOX_* are the host's
// and an image cannot set them. A call that names a working directory
// or user wins over the image's.

// maxImageUserBytes bounds an image's USER.
const maxImageUserBytes = 256

// imageUserPattern is a USER the agent can resolve: a name or uid,
// optionally ":" and a group name or gid.
var imageUserPattern = regexp.MustCompile(`^[A-Za-z0-9_.][A-Za-z0-9_.-]*(:[A-Za-z0-9_.][A-Za-z0-9_.-]*)?$`)

// imageDefaults returns the defaults of sessions made from image name
// (the host's default if ""), from its record; nil when there is
// nothing to apply (no record, an empty config, or the none runtime,
// which uses no images).
func (d *sessionDeps) imageDefaults(name string) *ledger.ImageDefaults {
	if d.images.none {
		return nil
	}
	if name == "" {
		name = d.images.def
	}
	m, err := rootfs.ReadMeta(d.images.dir, name)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			d.log.Warn("the image's record is unreadable; sessions get none of its config", "image", name, "err", err)
		}
		return nil
	}
	log := d.log.With("image", name)
	def := &ledger.ImageDefaults{
		Env:     imageEnv(m.Config.Env, log),
		WorkDir: imageWorkDir(m.Config.WorkingDir, log),
		User:    imageUser(m.Config.User, log),
	}
	if len(def.Env) == 0 && def.WorkDir == "" && def.User == "" {
		return nil
	}
	return def
}

// imageEnv returns the usable entries of an image's ENV: KEY=value with a
// shell name (the last of a repeated key wins), no NUL, not a variable
// the host sets, and, in their order, those that fit within
// environment.MaxEnvVars and MaxEnvBytes.
func imageEnv(env []string, log *slog.Logger) []string {
	vals := make(map[string]string)
	var order []string
	skipped, why := 0, ""
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		var err error
		switch {
		case !ok:
			err = errors.New("an entry without '='")
		case k == "PWD" || strings.HasPrefix(k, "TURNBOX_"):
			err = fmt.Errorf("%s is set by the host", k)
		default:
			err = environment.ValidateEnv(map[string]string{k: v})
		}
		if err != nil {
			if skipped++; why == "" {
				why = err.Error()
			}
			continue
		}
		if _, seen := vals[k]; !seen {
			order = append(order, k)
		}
		vals[k] = v
	}
	if skipped > 0 {
		log.Warn("skipped bad entries of the image's ENV", "skipped", skipped, "first", why)
	}
	out := make([]string, 0, min(len(order), environment.MaxEnvVars))
	total := 0
	for _, k := range order {
		n := len(k) + len(vals[k]) + 2 // as environment.ValidateEnv counts
		if len(out) == environment.MaxEnvVars || total+n > environment.MaxEnvBytes {
			continue // an entry that does not fit; a smaller later one may
		}
		total += n
		out = append(out, k+"="+vals[k])
	}
	if len(out) < len(order) {
		log.Warn("the image's ENV is over the bounds of a session's env; dropped entries that did not fit",
			"kept", len(out), "dropped", len(order)-len(out), "max_vars", environment.MaxEnvVars, "max_bytes", environment.MaxEnvBytes)
	}
	return out
}

// imageWorkDir returns an image's WORKDIR cleaned, or "" (the workspace)
// when it has none or it is not an absolute path.
func imageWorkDir(wd string, log *slog.Logger) string {
	if wd == "" {
		return ""
	}
	if !path.IsAbs(wd) || strings.IndexByte(wd, 0) >= 0 || len(wd) > unix.PathMax {
		log.Warn("ignored the image's WORKDIR: not an absolute path; commands start in the workspace", "workdir", truncate(wd, 200))
		return ""
	}
	return path.Clean(wd)
}

// imageUser returns an image's USER, or "" (root) when it has none or it
// is not a name, uid or uid:gid.
func imageUser(u string, log *slog.Logger) string {
	if u == "" {
		return ""
	}
	if len(u) > maxImageUserBytes || !imageUserPattern.MatchString(u) {
		log.Warn("ignored the image's USER: not a name, uid or uid:gid; commands run as root", "user", truncate(u, 200))
		return ""
	}
	return u
}

// truncate cuts s to at most n bytes, for logs.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// makeWorkDir creates directory dir (absolute in the sandbox) in the root
// tree open as root, with its missing parents, unless it exists (as
// docker does for a WORKDIR missing from the image). Each component is
// resolved as the sandbox would, inside the tree (RESOLVE_IN_ROOT: ".."
// stops at the root, an absolute symlink is taken relative to it), so no
// link in the image's files can lead it outside. New directories are
// root's, mode 0755.
func makeWorkDir(root int, dir string) error {
	rel := strings.TrimPrefix(path.Clean(dir), "/")
	if rel == "" {
		return nil
	}
	elems := strings.Split(rel, "/")
	for i := range elems {
		prefix := strings.Join(elems[:i+1], "/")
		fd, err := openInRoot(root, prefix)
		if err == nil {
			unix.Close(fd)
			continue
		}
		if !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("/%s: %w", prefix, err)
		}
		parent, err := openInRoot(root, strings.Join(elems[:i], "/"))
		if err != nil {
			return fmt.Errorf("/%s: %w", path.Dir(prefix), err)
		}
		err = unix.Mkdirat(parent, elems[i], 0o755)
		unix.Close(parent)
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("/%s: %w", prefix, err)
		}
		// What is there now (ours, or a link left dangling) must be a
		// directory of the tree.
		fd, err = openInRoot(root, prefix)
		if err != nil {
			return fmt.Errorf("/%s: %w", prefix, err)
		}
		unix.Close(fd)
	}
	return nil
}

// openInRoot opens directory rel (O_PATH) resolved inside the tree open
// as root, as the sandbox sees it; "" is the root itself.
func openInRoot(root int, rel string) (int, error) {
	if rel == "" {
		rel = "."
	}
	how := &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	}
	for range 16 {
		fd, err := unix.Openat2(root, rel, how)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		return fd, err
	}
	return -1, errors.New("kept racing with concurrent renames")
}

// imageDefaults returns the session's image defaults (zero if none).
func (s *session) imageDefaults() ledger.ImageDefaults {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rec.Image == nil {
		return ledger.ImageDefaults{}
	}
	return *s.rec.Image
}

// env returns the environment every command of the session gets, as
// KEY=value sorted: its image's ENV under its own Env.
func (s *session) env() []string {
	img := s.imageDefaults().Env
	if len(img) == 0 {
		return s.ownEnv()
	}
	vals := make(map[string]string, len(img)+len(s.cfg.Env))
	for _, kv := range img {
		k, v, _ := strings.Cut(kv, "=")
		vals[k] = v
	}
	maps.Copy(vals, s.cfg.Env)
	env := make([]string, 0, len(vals))
	for _, k := range slices.Sorted(maps.Keys(vals)) {
		env = append(env, k+"="+vals[k])
	}
	return env
}

// defaultDir is where the session's commands that name no directory
// start: its image's WORKDIR, checked through descriptors to be a
// directory of its root as the sandbox resolves it (inside the root),
// else the workspace.
func (s *session) defaultDir() (string, error) {
	wd := s.imageDefaults().WorkDir
	if wd == "" || !s.ownRoot() {
		return container.WorkspaceDir, nil
	}
	root, err := s.workspace().openTree()
	if err != nil {
		return "", err
	}
	defer unix.Close(root)
	fd, err := openInRoot(root, strings.TrimPrefix(wd, "/"))
	if err != nil {
		return "", fmt.Errorf("%w: the session's working directory %s (its image's WORKDIR) is not a directory (%v); name a directory for the call, or recreate it",
			environment.ErrInvalidArgument, wd, err)
	}
	unix.Close(fd)
	return wd, nil
}

// userFor is the user a command runs as: the one it names, else the
// session's image's USER ("" for root).
func (s *session) userFor(named string) string {
	if named != "" {
		return named
	}
	return s.imageDefaults().User
}

// makeImageWorkDir gives a new session's root its image's WORKDIR. One
// that cannot be made (a link in the image's files to something not a
// directory) is dropped from the session's defaults with a warning:
// commands then start in the workspace.
func (c *creation) makeImageWorkDir() error {
	s := c.s
	def := c.rec.Image
	if def == nil || def.WorkDir == "" || !s.ownRoot() {
		return nil
	}
	root, err := s.workspace().openTree()
	if err != nil {
		return err
	}
	err = makeWorkDir(root, def.WorkDir)
	unix.Close(root)
	if err == nil {
		return nil
	}
	c.h.log.Warn("cannot make the image's WORKDIR in the session's root; commands start in the workspace", "session", c.rec.ID, "workdir", def.WorkDir, "err", err)
	kept := *def
	kept.WorkDir = ""
	if err := c.h.ledger.UpdateSession(c.rec.ID, func(r *ledger.SessionRecord) error {
		r.Image = &kept
		return nil
	}); err != nil {
		return fmt.Errorf("embedded: recording session %q: %w", c.rec.ID, storageError(err))
	}
	c.rec.Image = &kept
	s.mu.Lock()
	s.rec.Image = &kept
	s.mu.Unlock()
	return nil
}
