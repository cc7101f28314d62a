//go:build linux

package localdisk

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/turnbox/turnbox/snapshot"
)

// quotasDir holds one file per volume with a quota: quotas/<volume>,
// the limit in bytes as decimal text. It lives outside volumes/<volume>/
// because a sandbox binds that directory read-write.
const quotasDir = "quotas"

var _ snapshot.Quotaer = (*Backend)(nil)

func (b *Backend) quotaPath(v string) string { return filepath.Join(b.root, quotasDir, v) }

// SetQuota records volume's limit. localdisk cannot make the filesystem
// enforce it (Quota reports Enforced false): the caller checks Quota after
// writes and refuses further ones itself, as the embedded host does. The
// limit is kept in <root>/quotas/<volume>, survives a restart, follows the
// volume across Rollback and is deleted with it.
func (b *Backend) SetQuota(ctx context.Context, volume string, limitBytes int64) error {
	if err := snapshot.ValidateQuota(limitBytes); err != nil {
		return err
	}
	unlock, err := b.begin(ctx, []string{volume}, volume)
	if err != nil {
		return err
	}
	defer unlock()
	if err := b.requireVolume(volume); err != nil {
		return err
	}
	p := b.quotaPath(volume)
	if limitBytes == 0 {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("localdisk: removing the quota of %q: %w", volume, mapErr(err))
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("localdisk: quota of %q: %w", volume, mapErr(err))
	}
	tmp := filepath.Join(filepath.Dir(p), tmpName(tmpPrefix))
	if err := os.WriteFile(tmp, []byte(strconv.FormatInt(limitBytes, 10)+"\n"), 0o644); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("localdisk: quota of %q: %w", volume, mapErr(err))
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("localdisk: quota of %q: %w", volume, mapErr(err))
	}
	return nil
}

// QuotaEnforced returns false: localdisk only records quotas (see
// SetQuota).
func (b *Backend) QuotaEnforced() bool { return false }

// Quota reports volume's limit and its tree's disk usage (a walk of the
// tree, like du: its cost grows with the number of files).
func (b *Backend) Quota(ctx context.Context, volume string) (snapshot.Quota, error) {
	if err := snapshot.ValidateName(volume); err != nil {
		return snapshot.Quota{}, err
	}
	if b.closed.Load() {
		return snapshot.Quota{}, errClosed
	}
	if err := ctx.Err(); err != nil {
		return snapshot.Quota{}, err
	}
	if err := b.requireVolume(volume); err != nil {
		return snapshot.Quota{}, err
	}
	limit, err := b.readQuota(volume)
	if err != nil {
		return snapshot.Quota{}, err
	}
	return snapshot.Quota{LimitBytes: limit, UsedBytes: diskUsage(b.volumePath(volume))}, nil
}

func (b *Backend) readQuota(volume string) (int64, error) {
	data, err := os.ReadFile(b.quotaPath(volume))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("localdisk: quota of %q: %w", volume, err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("localdisk: quota of %q: bad content %q in %s", volume, data, b.quotaPath(volume))
	}
	return n, nil
}

// dropQuota deletes volume's quota file (the volume is gone or new).
func (b *Backend) dropQuota(volume string) error {
	if err := os.Remove(b.quotaPath(volume)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// recoverQuotas removes temporaries and the quota files of volumes that no
// longer exist.
func (b *Backend) recoverQuotas() error {
	ents, err := os.ReadDir(filepath.Join(b.root, quotasDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			os.Remove(filepath.Join(b.root, quotasDir, e.Name()))
			continue
		}
		if _, err := os.Lstat(b.volumeDir(e.Name())); errors.Is(err, fs.ErrNotExist) {
			if err := b.dropQuota(e.Name()); err != nil {
				return err
			}
		}
	}
	return nil
}

var _ snapshot.TotalUsager = (*Backend)(nil)

// TotalUsage reports volume's tree's disk usage (as Quota) plus each of
// its snapshots' size as recorded when it was taken (a full copy's
// usage: reflinked copies share blocks, so this overstates what they
// pin on filesystems that reflink).
func (b *Backend) TotalUsage(ctx context.Context, volume string) (int64, error) {
	return snapshot.SumUsage(ctx, b, volume)
}
