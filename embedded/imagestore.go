package embedded

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/container/rootfs"
	"github.com/turnbox/turnbox/embedded/ledger"
	"github.com/turnbox/turnbox/environment"
)

// MaxImageRefLength bounds an image reference given to PullImage.
const MaxImageRefLength = 1024

// imageTrash is the directory, in the images directory, that keeps the
// directories of replaced images until PruneImages removes them (a
// running sandbox of the old image may still have its directory as its
// outer root). Its leading dot keeps it out of listings.
const imageTrash = ".trash"

// ImageStore is an images directory and what it takes to manage it
// without a host: `turnbox image` uses it in local mode, and a Host's
// image methods use it under the host's locks. Its methods never start a
// runtime or open storage. The zero value is not usable: Dir is required.
type ImageStore struct {
	// Dir is the images directory (Config.ImagesDir).
	Dir string
	// DefaultImage is the image of sessions that name none; ""
	// means DefaultImage.
	DefaultImage string
}

// List returns every image, in name order: each directory (with its
// record, or its name, computed size and directory time when it has
// none) and each record of an image saved from a snapshot (Volume set).
func (s ImageStore) List() ([]ImageInfo, error) {
	ents, err := os.ReadDir(s.Dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("embedded: listing images: %w", err)
	}
	byName := map[string]ImageInfo{}
	for _, e := range ents {
		// Skip temporaries, trash and records: names starting with a dot
		// and NAME.building.
		if !e.IsDir() || filepath.Ext(e.Name()) == ".building" || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		m, err := s.dirImage(e.Name())
		if err != nil {
			return nil, err
		}
		byName[m.Name] = m
	}
	recs, err := s.records()
	if err != nil {
		return nil, err
	}
	for _, m := range recs {
		if _, dup := byName[m.Name]; !dup && m.Volume != "" {
			byName[m.Name] = m
		}
	}
	out := make([]ImageInfo, 0, len(byName))
	for _, m := range byName {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// records returns the image records in the store (unreadable ones
// skipped).
func (s ImageStore) records() ([]ImageInfo, error) {
	ents, err := os.ReadDir(filepath.Join(s.Dir, rootfs.MetaDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("embedded: listing images: %w", err)
	}
	var out []ImageInfo
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || environment.ValidateImageName(name) != nil {
			continue
		}
		if m, err := rootfs.ReadMeta(s.Dir, name); err == nil {
			m.Name = name
			out = append(out, m)
		}
	}
	return out, nil
}

// children returns the names of the images saved from snapshots whose
// parent is image name.
func (s ImageStore) children(name string) ([]string, error) {
	recs, err := s.records()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range recs {
		if m.Parent == name && m.Name != name {
			out = append(out, m.Name)
		}
	}
	return out, nil
}

// dirImage describes the image whose directory is name: its record, or
// without one its name, computed size and directory time.
func (s ImageStore) dirImage(name string) (ImageInfo, error) {
	m, err := rootfs.ReadMeta(s.Dir, name)
	if err == nil {
		m.Name = name
		return m, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return ImageInfo{}, fmt.Errorf("embedded: %w", err)
	}
	dir := filepath.Join(s.Dir, name)
	m = ImageInfo{Name: name}
	if fi, err := os.Lstat(dir); err == nil {
		m.Created = fi.ModTime().UTC()
	}
	if m.SizeBytes, err = treeSize(dir); err != nil {
		return ImageInfo{}, fmt.Errorf("embedded: image %q: %w", name, err)
	}
	return m, nil
}

// Get returns image name: ErrImageNotFound when there is none, and
// ErrInvalidArgument for a malformed name.
func (s ImageStore) Get(name string) (ImageInfo, error) {
	if err := environment.ValidateImageName(name); err != nil {
		return ImageInfo{}, fmt.Errorf("image name: %w", err)
	}
	fi, err := os.Lstat(filepath.Join(s.Dir, name))
	switch {
	case err == nil && fi.IsDir():
		return s.dirImage(name)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return ImageInfo{}, fmt.Errorf("embedded: image %q: %w", name, err)
	}
	if m, err := rootfs.ReadMeta(s.Dir, name); err == nil && m.Volume != "" {
		m.Name = name
		return m, nil
	}
	return ImageInfo{}, fmt.Errorf("%w: %q is not in %s (see turnbox image ls)", environment.ErrImageNotFound, name, s.Dir)
}

// Record writes the record of image name, just made from source, whose
// directory is in place: res's digest, platform and config, the size of
// its files and the time now.
func (s ImageStore) Record(name, source string, res *rootfs.ImportResult) (ImageInfo, error) {
	size, err := treeSize(filepath.Join(s.Dir, name))
	if err != nil {
		return ImageInfo{}, fmt.Errorf("embedded: image %q: %w", name, err)
	}
	m := ImageInfo{
		Name: name, Source: source, Digest: res.Digest, Created: time.Now().UTC(),
		SizeBytes: size, Platform: res.Platform, Config: res.Config,
	}
	if err := rootfs.WriteMeta(s.Dir, m); err != nil {
		return ImageInfo{}, fmt.Errorf("embedded: %w", err)
	}
	return m, nil
}

// PullName is the name PullImage gives the image of ref: opts.Name, else
// ref's repository's last element. The error wraps ErrInvalidArgument.
func PullName(ref, name string) (string, error) {
	if len(ref) > MaxImageRefLength {
		return "", fmt.Errorf("%w: image reference of %d bytes, longer than %d", environment.ErrInvalidArgument, len(ref), MaxImageRefLength)
	}
	if name == "" {
		name = rootfs.RepositoryBase(ref)
		if err := environment.ValidateImageName(name); err != nil {
			return "", fmt.Errorf("cannot name the image after %s (%w): give a name", ref, err)
		}
		return name, nil
	}
	if err := environment.ValidateImageName(name); err != nil {
		return "", fmt.Errorf("image name: %w", err)
	}
	return name, nil
}

// Pull pulls ref from its registry into the store and records it. An
// image of that name fails with ErrAlreadyExists unless opts.Replace:
// the old directory then goes to the trash (PruneImages removes it) and
// sessions made from the old image keep their own copies. A failed or
// cancelled pull leaves nothing. A bad reference or name is
// ErrInvalidArgument.
func (s ImageStore) Pull(ctx context.Context, ref string, opts PullImageOptions) (ImageInfo, error) {
	name, err := PullName(ref, opts.Name)
	if err != nil {
		return ImageInfo{}, err
	}
	if _, err := s.Get(name); err == nil && !opts.Replace {
		return ImageInfo{}, fmt.Errorf("%w: image %q (replace it, or remove it first)", environment.ErrAlreadyExists, name)
	} else if err != nil && !errors.Is(err, environment.ErrImageNotFound) {
		return ImageInfo{}, err
	}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return ImageInfo{}, fmt.Errorf("embedded: %w", err)
	}
	dst := filepath.Join(s.Dir, name)
	if opts.Replace {
		dst = filepath.Join(s.Dir, "."+name+".pull-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	}
	res, err := rootfs.Pull(ctx, ref, dst, rootfs.PullOptions{Platform: opts.Platform, Insecure: opts.Insecure, Progress: opts.Progress})
	switch {
	case errors.Is(err, rootfs.ErrBadReference):
		return ImageInfo{}, fmt.Errorf("%w: %w", environment.ErrInvalidArgument, err)
	case errors.Is(err, rootfs.ErrImageExists):
		return ImageInfo{}, fmt.Errorf("%w: image %q: %w", environment.ErrAlreadyExists, name, err)
	case err != nil:
		return ImageInfo{}, fmt.Errorf("embedded: %w", err)
	}
	if opts.Replace {
		if err := s.swapIn(name, dst); err != nil {
			_ = os.RemoveAll(dst)
			return ImageInfo{}, err
		}
	}
	return s.Record(name, "pull:"+ref, res)
}

// swapIn puts the directory tmp in place as image name, moving the
// directory it replaces, if any, to the trash.
func (s ImageStore) swapIn(name, tmp string) error {
	dst := filepath.Join(s.Dir, name)
	err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dst, unix.RENAME_EXCHANGE)
	if errors.Is(err, unix.ENOENT) {
		err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE)
		if err == nil {
			return nil
		}
	}
	if err != nil {
		return fmt.Errorf("embedded: installing image %q: %w", name, err)
	}
	// tmp now holds the old image.
	return s.trash(name, tmp)
}

// trash moves dir, the old directory of image name, to the trash.
func (s ImageStore) trash(name, dir string) error {
	t := filepath.Join(s.Dir, imageTrash)
	if err := os.MkdirAll(t, 0o700); err != nil {
		return fmt.Errorf("embedded: %w", err)
	}
	to := filepath.Join(t, name+"."+strconv.FormatInt(time.Now().UnixNano(), 10))
	if err := os.Rename(dir, to); err != nil {
		return fmt.Errorf("embedded: moving image %q's old directory to the trash: %w", name, err)
	}
	return nil
}

// Users returns why image name cannot be removed: nil, or an error
// wrapping ErrImageInUse that names the sessions in sessions using it
// (those of isolated runtimes that name it, or name none while it is the
// default) and the images saved from snapshots whose parent it is.
func (s ImageStore) Users(name string, sessions []ledger.SessionRecord) error {
	var ids []string
	seen := map[string]bool{}
	def := cmp.Or(s.DefaultImage, DefaultImage)
	for _, r := range sessions {
		if r.Runtime == string(ContainerRuntimeNone) {
			continue
		}
		var cfg environment.SessionConfig
		if len(r.Config) > 0 {
			if err := json.Unmarshal(r.Config, &cfg); err != nil {
				return fmt.Errorf("embedded: session %s: decoding its config: %w", r.ID, err)
			}
		}
		if cmp.Or(cfg.Image, def) == name && !seen[r.ID] {
			seen[r.ID] = true
			ids = append(ids, r.ID)
		}
	}
	children, err := s.children(name)
	if err != nil {
		return err
	}
	var why []string
	if len(ids) > 0 {
		sort.Strings(ids)
		why = append(why, "session(s) "+strings.Join(ids, ", ")+" (remove them first: turnbox session rm ID)")
	}
	if len(children) > 0 {
		why = append(why, "image(s) saved from its sessions' snapshots "+strings.Join(children, ", "))
	}
	if len(why) > 0 {
		return fmt.Errorf("%w: image %q is used by %s", environment.ErrImageInUse, name, strings.Join(why, " and "))
	}
	return nil
}

// detach takes image m (from Get) out of the store unless Users refuses
// it: its directory is renamed to a hidden name (so no half-removed image
// is ever used) and its record removed. It returns the image and a
// function that deletes the renamed directory.
func (s ImageStore) detach(m ImageInfo, sessions []ledger.SessionRecord) (ImageInfo, func() error, error) {
	name := m.Name
	if err := s.Users(name, sessions); err != nil {
		return ImageInfo{}, nil, err
	}
	dir := filepath.Join(s.Dir, name)
	gone := "." + name + ".rm-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	trash := filepath.Join(s.Dir, gone)
	switch err := os.Rename(dir, trash); {
	case errors.Is(err, fs.ErrNotExist) && m.Volume != "":
		trash = "" // an image saved from a snapshot: no directory
	case errors.Is(err, fs.ErrNotExist):
		return ImageInfo{}, nil, fmt.Errorf("%w: %q was removed meanwhile", environment.ErrImageNotFound, name)
	case err != nil:
		return ImageInfo{}, nil, fmt.Errorf("embedded: removing image %q: %w", name, err)
	}
	if err := rootfs.RemoveMeta(s.Dir, name); err != nil {
		return ImageInfo{}, nil, fmt.Errorf("embedded: removing image %q's record: %w", name, err)
	}
	return m, func() error {
		if trash == "" {
			return nil
		}
		if err := os.RemoveAll(trash); err != nil {
			return fmt.Errorf("embedded: removing image %q (now at %s): %w", name, trash, err)
		}
		return nil
	}, nil
}

// Remove removes image name, its directory and its record, unless Users
// refuses it (ErrImageInUse); sessions are the ledger's. An image saved
// from a snapshot keeps its storage volume (Volume) until PruneImages.
// ErrImageNotFound when there is no such image.
func (s ImageStore) Remove(name string, sessions []ledger.SessionRecord) (ImageInfo, error) {
	m, err := s.Get(name)
	if err != nil {
		return ImageInfo{}, err
	}
	m, purge, err := s.detach(m, sessions)
	if err != nil {
		return ImageInfo{}, err
	}
	return m, purge()
}

// pruneTrash removes the directories of replaced images (in the trash)
// that no session in sessions uses any more, and returns what it removed
// ("trash/NAME.N") and their size.
func (s ImageStore) pruneTrash(sessions []ledger.SessionRecord) ([]string, int64, error) {
	dir := filepath.Join(s.Dir, imageTrash)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("embedded: %w", err)
	}
	var removed []string
	var freed int64
	for _, e := range ents {
		i := strings.LastIndexByte(e.Name(), '.')
		if i <= 0 || !e.IsDir() {
			continue
		}
		if s.Users(e.Name()[:i], sessions) != nil {
			continue
		}
		p := filepath.Join(dir, e.Name())
		n, _ := treeSize(p)
		if err := os.RemoveAll(p); err != nil {
			return removed, freed, fmt.Errorf("embedded: pruning %s: %w", p, err)
		}
		removed, freed = append(removed, imageTrash+"/"+e.Name()), freed+n
	}
	return removed, freed, nil
}

// treeSize is the size of the regular files under dir (not following
// symlinks), each hard-linked file counted once.
func treeSize(dir string) (int64, error) {
	var n int64
	seen := map[uint64]bool{}
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
			if seen[st.Ino] {
				return nil
			}
			seen[st.Ino] = true
		}
		n += fi.Size()
		return nil
	})
	return n, err
}
