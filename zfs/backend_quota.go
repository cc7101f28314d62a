package zfs

import (
	"context"
	"fmt"
	"strconv"

	"github.com/turnbox/turnbox/snapshot"
)

// PropQuota is set on a volume's container dataset by SetQuota: the
// volume's quota in bytes. The native refquota lives on the active
// generation, and a rollback that swaps generations gives the new one the
// quota recorded here.
const PropQuota = "turnbox:quota"

var _ snapshot.Quotaer = (*Backend)(nil)

// SetQuota limits volume to limitBytes (0 removes the limit) with the
// native refquota property on its active generation: ZFS refuses writes
// that would make the dataset reference more (EDQUOT). Snapshots and
// swapped-out generations do not count. The limit is also recorded on the
// volume's container dataset (PropQuota), from which a rollback's new
// generation gets it; a clone starts without one.
//
// ZFS refuses a refquota below what the dataset references now; the
// backend then sets refquota to the current usage, so the volume cannot
// grow until files are deleted, and Quota still reports limitBytes.
//
// refquota counts allocated bytes, after compression: on a pool whose
// datasets compress (OpenZFS 2.3's default), data that compresses well
// can exceed limitBytes in logical size.
func (b *Backend) SetQuota(ctx context.Context, volume string, limitBytes int64) error {
	if err := snapshot.ValidateQuota(limitBytes); err != nil {
		return err
	}
	if err := b.check(volume); err != nil {
		return err
	}
	v, unlock, err := b.lockVol(volume)
	if err != nil {
		return err
	}
	defer unlock()
	b.mu.Lock()
	a := v.active().ds
	b.mu.Unlock()
	if err := b.d.SetProps(ctx, b.parent+"/"+v.comp, map[string]string{PropQuota: strconv.FormatInt(limitBytes, 10)}); err != nil {
		return fmt.Errorf("zfs: quota of %q: %w", volume, err)
	}
	b.mu.Lock()
	v.quota = limitBytes
	b.mu.Unlock()
	if err := b.applyRefquota(ctx, a, limitBytes); err != nil {
		return fmt.Errorf("zfs: quota of %q: %w", volume, err)
	}
	return nil
}

// Quota reports volume's limit and its active generation's referenced
// bytes. ZFS updates referenced when a transaction group syncs (every few
// seconds), so it lags recent writes.
func (b *Backend) Quota(ctx context.Context, volume string) (snapshot.Quota, error) {
	if err := b.check(volume); err != nil {
		return snapshot.Quota{}, err
	}
	v, unlock, err := b.lockVol(volume)
	if err != nil {
		return snapshot.Quota{}, err
	}
	defer unlock()
	b.mu.Lock()
	a, limit := v.active().ds, v.quota
	b.mu.Unlock()
	ds, err := b.d.Get(ctx, []string{a}, []string{"referenced"}, 0)
	if err != nil {
		return snapshot.Quota{}, fmt.Errorf("zfs: quota of %q: %w", volume, err)
	}
	if len(ds) == 0 {
		return snapshot.Quota{}, fmt.Errorf("zfs: quota of %q: %s: %w", volume, a, ErrNotFound)
	}
	return snapshot.Quota{LimitBytes: limit, UsedBytes: ds[0].Int("referenced")}, nil
}

// QuotaEnforced returns true: ZFS refuses writes past refquota with
// EDQUOT.
func (b *Backend) QuotaEnforced() bool { return true }

// applyRefquota sets refquota on dataset ds (none for 0). If ZFS refuses
// because ds references more already, refquota is set to what it
// references, so it cannot grow.
func (b *Backend) applyRefquota(ctx context.Context, ds string, limitBytes int64) error {
	val := "none"
	if limitBytes > 0 {
		val = strconv.FormatInt(limitBytes, 10)
	}
	err := b.d.SetProps(ctx, ds, map[string]string{"refquota": val})
	if err == nil || limitBytes == 0 {
		return err
	}
	got, gerr := b.d.Get(ctx, []string{ds}, []string{"referenced"}, 0)
	if gerr != nil || len(got) == 0 || got[0].Int("referenced") <= limitBytes {
		return err // not the below-usage case
	}
	ref := got[0].Int("referenced")
	if err2 := b.d.SetProps(ctx, ds, map[string]string{"refquota": strconv.FormatInt(ref, 10)}); err2 != nil {
		return fmt.Errorf("%w (and at its current usage of %d bytes: %v)", err, ref, err2)
	}
	return nil
}

var _ snapshot.TotalUsager = (*Backend)(nil)

// TotalUsage reports the used property of volume's container dataset:
// every generation with its snapshots (what destroying the volume would
// free; a clone's shared blocks stay charged to its origin). Like
// referenced, it lags writes until a transaction group syncs.
func (b *Backend) TotalUsage(ctx context.Context, volume string) (int64, error) {
	if err := b.check(volume); err != nil {
		return 0, err
	}
	v, unlock, err := b.lockVol(volume)
	if err != nil {
		return 0, err
	}
	defer unlock()
	ds, err := b.d.Get(ctx, []string{b.parent + "/" + v.comp}, []string{"used"}, 0)
	if err != nil {
		return 0, fmt.Errorf("zfs: total usage of %q: %w", volume, err)
	}
	if len(ds) == 0 {
		return 0, fmt.Errorf("zfs: total usage of %q: %w", volume, ErrNotFound)
	}
	return ds[0].Int("used"), nil
}
