package zfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// CommandDriver runs the zfs command. It uses only syntax that both
// OpenZFS and zfs-fuse 0.7 accept: `zfs get -H -p` for parsable output
// (zfs-fuse's `zfs list` has no -p), -o on create/clone/snapshot for
// properties, `destroy -d` for deferred destruction. User holds need
// OpenZFS (zfs-fuse implements them in a missing Python helper; they fail
// with ErrUnsupported there).
type CommandDriver struct {
	zfs         string
	busyRetries int
	// noProgram: zfs answered that it has no channel programs
	// (zfs-fuse); destroyTree stops trying.
	noProgram atomic.Bool
}

// CommandOption configures a CommandDriver.
type CommandOption func(*CommandDriver)

// WithZFSCommand sets the zfs binary (default "zfs", looked up on PATH).
func WithZFSCommand(path string) CommandOption {
	return func(d *CommandDriver) { d.zfs = path }
}

// WithBusyRetries sets how many times Destroy and Rename of a filesystem
// retry after ErrBusy (a mount still settling: zfs-fuse needs it now and
// then, and under load for seconds), with backoff from 20 ms doubling to
// 500 ms. Default 12 (about 4 s in all).
func WithBusyRetries(n int) CommandOption {
	return func(d *CommandDriver) { d.busyRetries = n }
}

// NewCommandDriver returns a Driver over the zfs command.
func NewCommandDriver(opts ...CommandOption) *CommandDriver {
	d := &CommandDriver{zfs: "zfs", busyRetries: 12}
	for _, o := range opts {
		o(d)
	}
	return d
}

var _ Driver = (*CommandDriver)(nil)

// Name returns "command".
func (d *CommandDriver) Name() string { return "command" }

// Run runs the zfs command with args and returns its stdout. A failure is
// a *CommandError unwrapping to the sentinel its stderr maps to.
func (d *CommandDriver) Run(ctx context.Context, args ...string) ([]byte, error) {
	return runCommand(ctx, d.zfs, args...)
}

func runCommand(ctx context.Context, prog string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, prog, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err == nil {
		return stdout.Bytes(), nil
	}
	ce := &CommandError{Args: append([]string{prog}, args...), Stderr: strings.TrimSpace(stderr.String()), ExitCode: -1}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		ce.ExitCode = ee.ExitCode()
		ce.Err = classify(ce.Stderr)
		if ce.Err == nil {
			ce.Err = err
		}
	} else {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		ce.Err = err
	}
	return nil, ce
}

// retryBusy runs a destroy or rename, retrying after ErrBusy. zfs can
// report busy after the change itself went through (the remount or
// unmount around it failed), so a retry that finds its source gone checks
// whether an earlier attempt did the job: done reports that.
func (d *CommandDriver) retryBusy(ctx context.Context, done func() bool, args ...string) error {
	tries := 0
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		tries++
		_, err := d.Run(ctx, args...)
		switch {
		case err == nil:
			return struct{}{}, nil
		case tries > 1 && errors.Is(err, ErrNotFound) && done != nil && done():
			return struct{}{}, nil
		case !errors.Is(err, ErrBusy) || errors.Is(err, ErrNotNewest) || strings.Contains(err.Error(), "dependent clones"):
			return struct{}{}, backoff.Permanent(err)
		}
		return struct{}{}, err
	}, backoff.WithBackOff(busyBackOff()), backoff.WithMaxTries(uint(d.busyRetries)+1), backoff.WithMaxElapsedTime(0))
	return err
}

// busyBackOff is the wait between tries of a busy zfs command: 20 ms,
// doubling to at most 500 ms.
func busyBackOff() *backoff.ExponentialBackOff {
	return &backoff.ExponentialBackOff{InitialInterval: 20 * time.Millisecond, Multiplier: 2, MaxInterval: 500 * time.Millisecond}
}

// propArgs renders props as sorted "-o k=v" pairs.
func propArgs(props map[string]string) ([]string, error) {
	keys := make([]string, 0, len(props))
	for k := range props {
		if strings.Contains(k, ":") {
			if err := ValidatePropertyName(k); err != nil {
				return nil, err
			}
		}
		if strings.ContainsAny(k, "= \t\n") || k == "" {
			return nil, fmt.Errorf("%w: property name %q", ErrInvalidName, k)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	args := make([]string, 0, 2*len(keys))
	for _, k := range keys {
		if strings.ContainsAny(props[k], "\t\n") {
			return nil, fmt.Errorf("%w: value of property %q contains a tab or newline", ErrInvalidName, k)
		}
		args = append(args, "-o", k+"="+props[k])
	}
	return args, nil
}

// Create runs zfs create [-p] -o ... name.
func (d *CommandDriver) Create(ctx context.Context, name string, opts CreateOptions) error {
	if err := ValidateDataset(name); err != nil {
		return err
	}
	args := []string{"create"}
	if opts.Parents {
		args = append(args, "-p")
	}
	pa, err := propArgs(opts.Props)
	if err != nil {
		return err
	}
	args = append(append(args, pa...), name)
	_, err = d.Run(ctx, args...)
	return d.finishMount(ctx, name, err)
}

// notMounted is how zfs create and zfs clone report a dataset they made
// but could not mount.
const notMounted = "successfully created, but not mounted"

// finishMount completes a create or clone that made name but could not
// mount it (seen under load: "mountpoint or dataset is busy" right after
// the previous generation was unmounted from the same path): it retries
// the mount as for any busy failure, and if the mount still fails it
// destroys name, so that Create and Clone either make a mounted dataset or
// leave nothing behind.
func (d *CommandDriver) finishMount(ctx context.Context, name string, err error) error {
	if err == nil || !strings.Contains(err.Error(), notMounted) {
		return err
	}
	merr := d.retryBusy(ctx, nil, "mount", name)
	if merr == nil {
		return nil
	}
	if derr := d.retryBusy(context.WithoutCancel(ctx), nil, "destroy", name); derr != nil && !errors.Is(derr, ErrNotFound) {
		return fmt.Errorf("%w (mounting it again: %v; destroying it: %v)", err, merr, derr)
	}
	return fmt.Errorf("%w (mounting it again: %v; the new dataset was destroyed)", err, merr)
}

// Snapshot runs zfs snapshot -o ... snap.
func (d *CommandDriver) Snapshot(ctx context.Context, snap string, props map[string]string) error {
	if err := ValidateSnapshot(snap); err != nil {
		return err
	}
	pa, err := propArgs(props)
	if err != nil {
		return err
	}
	_, err = d.Run(ctx, append(append([]string{"snapshot"}, pa...), snap)...)
	return err
}

// Clone runs zfs clone [-p] -o ... snap name.
func (d *CommandDriver) Clone(ctx context.Context, snap, name string, opts CreateOptions) error {
	if err := ValidateSnapshot(snap); err != nil {
		return err
	}
	if err := ValidateDataset(name); err != nil {
		return err
	}
	args := []string{"clone"}
	if opts.Parents {
		args = append(args, "-p")
	}
	pa, err := propArgs(opts.Props)
	if err != nil {
		return err
	}
	args = append(append(args, pa...), snap, name)
	_, err = d.Run(ctx, args...)
	return d.finishMount(ctx, name, err)
}

// Rollback runs zfs rollback snap (never -r: nothing is destroyed).
func (d *CommandDriver) Rollback(ctx context.Context, snap string) error {
	if err := ValidateSnapshot(snap); err != nil {
		return err
	}
	_, err := d.Run(ctx, "rollback", snap)
	return err
}

// Rename runs zfs rename from to.
func (d *CommandDriver) Rename(ctx context.Context, from, to string) error {
	if err := ValidateName(from); err != nil {
		return err
	}
	if err := ValidateName(to); err != nil {
		return err
	}
	// A rename that went through leaves to in place of from.
	done := func() bool {
		ctx := context.WithoutCancel(ctx)
		gone, err1 := d.Exists(ctx, from)
		there, err2 := d.Exists(ctx, to)
		return err1 == nil && err2 == nil && !gone && there
	}
	return d.retryBusy(ctx, done, "rename", from, to)
}

// Promote runs zfs promote name.
func (d *CommandDriver) Promote(ctx context.Context, name string) error {
	if err := ValidateDataset(name); err != nil {
		return err
	}
	_, err := d.Run(ctx, "promote", name)
	return err
}

// Destroy runs zfs destroy [-r] [-d] name.
func (d *CommandDriver) Destroy(ctx context.Context, name string, opts DestroyOptions) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	args := []string{"destroy"}
	if opts.Recursive {
		args = append(args, "-r")
	}
	if opts.Defer {
		if !strings.Contains(name, "@") {
			return fmt.Errorf("%w: deferred destroy of %q: only snapshots can be deferred", ErrInvalidName, name)
		}
		args = append(args, "-d")
	}
	// A destroy that went through leaves nothing by that name.
	done := func() bool {
		there, err := d.Exists(context.WithoutCancel(ctx), name)
		return err == nil && !there
	}
	return d.retryBusy(ctx, done, append(args, name)...)
}

// SetProps runs zfs set k=v name, once per property (zfs-fuse's set takes
// one property at a time), in sorted order.
func (d *CommandDriver) SetProps(ctx context.Context, name string, props map[string]string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	pa, err := propArgs(props)
	if err != nil {
		return err
	}
	for i := 1; i < len(pa); i += 2 {
		// Changing mountpoint unmounts: a process killed a moment ago
		// (a rollback kills the session's processes first) may still hold
		// the mount for a few milliseconds, so busy is retried.
		if err := d.retryBusy(ctx, nil, "set", pa[i], name); err != nil {
			return err
		}
	}
	return nil
}

// Get runs zfs get -H -p -o name,property,value [-r | -d depth] props names.
func (d *CommandDriver) Get(ctx context.Context, names []string, props []string, depth int) ([]Dataset, error) {
	for _, n := range names {
		if err := ValidateName(n); err != nil {
			return nil, err
		}
	}
	if len(props) == 0 {
		props = []string{"type"}
	}
	args := []string{"get", "-H", "-p", "-o", "name,property,value"}
	switch {
	case depth < 0:
		args = append(args, "-r")
	case depth > 0:
		args = append(args, "-d", strconv.Itoa(depth))
	}
	args = append(args, strings.Join(props, ","))
	args = append(args, names...)
	out, err := d.Run(ctx, args...)
	if err != nil {
		return nil, err
	}
	return ParseGet(out)
}

// ParseGet parses the output of `zfs get -H -p -o name,property,value`
// into datasets in first-seen order. Values "-" (unset) are dropped.
func ParseGet(out []byte) ([]Dataset, error) {
	var res []Dataset
	idx := map[string]int{}
	for ln, line := range strings.Split(string(out), "\n") {
		if line == "" {
			continue
		}
		f := strings.SplitN(line, "\t", 3)
		if len(f) != 3 {
			return nil, fmt.Errorf("zfs get: line %d: want 3 tab-separated fields, got %q", ln+1, line)
		}
		i, ok := idx[f[0]]
		if !ok {
			i = len(res)
			idx[f[0]] = i
			res = append(res, Dataset{Name: f[0], Props: map[string]string{}})
		}
		if f[2] != "-" {
			res[i].Props[f[1]] = f[2]
		}
	}
	return res, nil
}

// Exists reports whether name exists (zfs get type name).
func (d *CommandDriver) Exists(ctx context.Context, name string) (bool, error) {
	_, err := d.Get(ctx, []string{name}, []string{"type"}, 0)
	if err == nil {
		return true, nil
	}
	if isNotFound(err) {
		return false, nil
	}
	return false, err
}

// Hold runs zfs hold tag snap.
func (d *CommandDriver) Hold(ctx context.Context, snap, tag string) error {
	if err := ValidateSnapshot(snap); err != nil {
		return err
	}
	if err := ValidateComponent(tag); err != nil {
		return err
	}
	_, err := d.Run(ctx, "hold", tag, snap)
	return err
}

// Release runs zfs release tag snap.
func (d *CommandDriver) Release(ctx context.Context, snap, tag string) error {
	if err := ValidateSnapshot(snap); err != nil {
		return err
	}
	if err := ValidateComponent(tag); err != nil {
		return err
	}
	_, err := d.Run(ctx, "release", tag, snap)
	return err
}

// Holds runs zfs holds -H snap and returns the tags.
func (d *CommandDriver) Holds(ctx context.Context, snap string) ([]string, error) {
	if err := ValidateSnapshot(snap); err != nil {
		return nil, err
	}
	out, err := d.Run(ctx, "holds", "-H", snap)
	if err != nil {
		return nil, err
	}
	return ParseHolds(out), nil
}

// ParseHolds parses `zfs holds -H` output ("name<TAB>tag<TAB>timestamp").
func ParseHolds(out []byte) []string {
	var tags []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Split(line, "\t")
		if len(f) >= 2 && f[1] != "" {
			tags = append(tags, f[1])
		}
	}
	return tags
}

// ZpoolCommand runs the zpool command with args and returns its stdout;
// failures are *CommandError like the zfs driver's. Test fixtures use it.
func ZpoolCommand(ctx context.Context, args ...string) ([]byte, error) {
	return runCommand(ctx, "zpool", args...)
}
