package zfs

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
)

// treeDestroyer is implemented by drivers that can destroy a dataset tree
// in one transaction group, with a channel program (OpenZFS; zfs-fuse has
// none). destroyTree destroys root with every filesystem and snapshot
// under it, clones inside the tree before their origins (destroyOrder),
// after unmounting its mounted filesystems; markProp, a user property ("":
// none), is set to markValue on root first, in the same transaction. If
// ZFS refuses a change (a clone outside the tree, a hold), the program
// stops there, what it did before stays done, and the error names the
// dataset.
type treeDestroyer interface {
	destroyTree(ctx context.Context, root, markProp, markValue string) error
}

// destroyTreeProgram is the channel program of destroyTree, the same for
// both drivers. Its arguments (argv) are the root, the property to mark it
// with ("" for none) and its value, then the datasets to destroy in order.
// It returns {failed = dataset, errno = n} for the first change ZFS
// refuses, else an empty table.
const destroyTreeProgram = `
local argv = (...).argv
local root, prop, value = argv[1], argv[2], argv[3]
if prop ~= "" then
	local e = zfs.sync.set_prop(root, prop, value)
	if e ~= 0 then return {failed = root, errno = e} end
end
for i = 4, #argv do
	local e = zfs.sync.destroy(argv[i])
	if e ~= 0 then return {failed = argv[i], errno = e} end
end
return {}
`

// destroyTreePlan lists root's tree through d and returns destroyTree's
// program arguments and the mounted filesystems, deepest first.
func destroyTreePlan(ctx context.Context, d Driver, root, markProp, markValue string) (argv, mounted []string, err error) {
	if err := ValidateDataset(root); err != nil {
		return nil, nil, err
	}
	if markProp != "" {
		if _, err := propArgs(map[string]string{markProp: markValue}); err != nil {
			return nil, nil, err
		}
	}
	all, err := d.Get(ctx, []string{root}, []string{"type", "origin", "mounted"}, -1)
	if err != nil {
		return nil, nil, fmt.Errorf("zfs: destroy %s: %w", root, err)
	}
	order, err := destroyOrder(all)
	if err != nil {
		return nil, nil, err
	}
	for i := len(all) - 1; i >= 0; i-- {
		if all[i].Type() == "filesystem" && all[i].Props["mounted"] == "yes" {
			mounted = append(mounted, all[i].Name)
		}
	}
	return append([]string{root, markProp, markValue}, order...), mounted, nil
}

// programFailure turns the table destroyTreeProgram returned into an
// error (nil if it did everything).
func programFailure(failed string, errno int64) error {
	if errno == 0 {
		return nil
	}
	return errnoError("destroy", failed, syscall.Errno(errno))
}

// destroyTree runs destroyTreeProgram with `zfs program -j`. A zfs
// without channel programs (zfs-fuse) answers ErrUnsupported, which the
// driver remembers.
func (d *CommandDriver) destroyTree(ctx context.Context, root, markProp, markValue string) error {
	if d.noProgram.Load() {
		return fmt.Errorf("zfs: destroy %s: %w: no channel programs", root, ErrUnsupported)
	}
	argv, mounted, err := destroyTreePlan(ctx, d, root, markProp, markValue)
	if err != nil {
		return err
	}
	for _, m := range mounted {
		if err := d.retryBusy(ctx, nil, "unmount", m); err != nil {
			return err
		}
	}
	f, err := os.CreateTemp("", "turnbox-destroy-*.lua")
	if err != nil {
		return fmt.Errorf("zfs: destroy %s: %w", root, err)
	}
	defer os.Remove(f.Name())
	_, werr := f.WriteString(destroyTreeProgram)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("zfs: destroy %s: writing the channel program: %w", root, werr)
	}
	pool, _, _ := strings.Cut(root, "/")
	out, err := d.Run(ctx, append([]string{"program", "-j", pool, f.Name()}, argv...)...)
	if err != nil {
		if isUnsupported(err) {
			d.noProgram.Store(true)
		}
		return err
	}
	var res struct {
		Return struct {
			Failed string `json:"failed"`
			Errno  int64  `json:"errno"`
		} `json:"return"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return fmt.Errorf("zfs: destroy %s: reading the channel program's output %q: %w", root, out, err)
	}
	return programFailure(res.Return.Failed, res.Return.Errno)
}
