package zfs

// HasDependents reports whether other volumes were cloned from volume's
// snapshots and still depend on them: destroying volume would then
// promote them (DestroyVolume) rather than free its data.
func (b *Backend) HasDependents(volume string) (bool, error) {
	if err := b.check(volume); err != nil {
		return false, err
	}
	v, unlock, err := b.lockVol(volume)
	if err != nil {
		return false, err
	}
	defer unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dependsOnLocked(b.parent + "/" + v.comp), nil
}
