//go:build linux && cgo && libzfs_core

package zfs

/*
#cgo pkg-config: libzfs_core libzfs
#cgo CFLAGS: -D_GNU_SOURCE -D_LARGEFILE64_SOURCE
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <errno.h>
#include <libzfs_core.h>
#include <libzfs.h>
#include <libnvpair.h>

static nvlist_t *tb_nvl(void) { return fnvlist_alloc(); }
static void tb_add_str(nvlist_t *l, const char *k, const char *v) { fnvlist_add_string(l, k, v); }
static void tb_add_bool(nvlist_t *l, const char *k) { fnvlist_add_boolean(l, k); }
static void tb_add_nvl(nvlist_t *l, const char *k, nvlist_t *v) { fnvlist_add_nvlist(l, k, v); }
static void tb_free(nvlist_t *l) { if (l != NULL) fnvlist_free(l); }

static int tb_snapshot(const char *snap, nvlist_t *props) {
	nvlist_t *snaps = fnvlist_alloc();
	nvlist_t *errs = NULL;
	fnvlist_add_boolean(snaps, snap);
	int err = lzc_snapshot(snaps, props, &errs);
	fnvlist_free(snaps);
	if (errs != NULL) fnvlist_free(errs);
	return err;
}

static int tb_destroy_snap(const char *snap, int defer) {
	nvlist_t *snaps = fnvlist_alloc();
	nvlist_t *errs = NULL;
	fnvlist_add_boolean(snaps, snap);
	int err = lzc_destroy_snaps(snaps, defer ? B_TRUE : B_FALSE, &errs);
	fnvlist_free(snaps);
	if (errs != NULL) fnvlist_free(errs);
	return err;
}

static int tb_hold(const char *snap, const char *tag) {
	nvlist_t *holds = fnvlist_alloc();
	nvlist_t *errs = NULL;
	fnvlist_add_string(holds, snap, tag);
	int err = lzc_hold(holds, -1, &errs);
	fnvlist_free(holds);
	if (errs != NULL) fnvlist_free(errs);
	return err;
}

static int tb_release(const char *snap, const char *tag) {
	nvlist_t *holds = fnvlist_alloc();
	nvlist_t *tags = fnvlist_alloc();
	nvlist_t *errs = NULL;
	fnvlist_add_boolean(tags, tag);
	fnvlist_add_nvlist(holds, snap, tags);
	int err = lzc_release(holds, &errs);
	fnvlist_free(tags);
	fnvlist_free(holds);
	if (errs != NULL) fnvlist_free(errs);
	return err;
}

// tb_holds writes the hold tags of snap, NUL-separated, into buf.
static int tb_holds(const char *snap, char *buf, int len) {
	nvlist_t *holds = NULL;
	int err = lzc_get_holds(snap, &holds);
	if (err != 0) return err;
	int off = 0;
	for (nvpair_t *p = nvlist_next_nvpair(holds, NULL); p != NULL; p = nvlist_next_nvpair(holds, p)) {
		const char *n = nvpair_name(p);
		int l = strlen(n);
		if (off + l + 1 >= len) { fnvlist_free(holds); return ENAMETOOLONG; }
		memcpy(buf + off, n, l + 1);
		off += l + 1;
	}
	buf[off] = 0;
	fnvlist_free(holds);
	return 0;
}

// tb_mount mounts a filesystem through libzfs (lzc has no mount call).
static int tb_mount(libzfs_handle_t *h, const char *name) {
	zfs_handle_t *z = zfs_open(h, name, ZFS_TYPE_FILESYSTEM);
	if (z == NULL) return -1;
	int err = 0;
	if (zfs_prop_get_int(z, ZFS_PROP_CANMOUNT) == ZFS_CANMOUNT_ON) {
		char mp[ZFS_MAXPROPLEN];
		if (zfs_prop_get(z, ZFS_PROP_MOUNTPOINT, mp, sizeof (mp), NULL, NULL, 0, B_FALSE) == 0 &&
		    mp[0] == '/')
			err = zfs_mount(z, NULL, 0);
	}
	zfs_close(z);
	return err;
}

static int tb_unmount(libzfs_handle_t *h, const char *name) {
	zfs_handle_t *z = zfs_open(h, name, ZFS_TYPE_FILESYSTEM);
	if (z == NULL) return -1;
	int err = 0;
	if (zfs_is_mounted(z, NULL))
		err = zfs_unmount(z, NULL, 0);
	zfs_close(z);
	return err;
}

// tb_set sets properties through libzfs, which remounts on a mountpoint change.
static int tb_set(libzfs_handle_t *h, const char *name, nvlist_t *props) {
	zfs_handle_t *z = zfs_open(h, name, ZFS_TYPE_FILESYSTEM | ZFS_TYPE_VOLUME | ZFS_TYPE_SNAPSHOT);
	if (z == NULL) return -1;
	int err = zfs_prop_set_list(z, props);
	zfs_close(z);
	return err;
}

// tb_get_t collects `zfs get`-like records for tb_get: for every
// dataset visited and every property that is set, "name\0prop\0value\0".
typedef struct {
	char *buf;
	size_t len, cap;
	int oom;
	int nprops;
	char **props;
	int *ids;     // zfs_prop_t, or TB_USERPROP
	int maxdepth; // -1: unlimited
	int depth;
} tb_get_t;

#define TB_USERPROP (-100)

// tb_prop_id resolves a property name: a native zfs_prop_t, TB_USERPROP
// for a user property ("module:name"), or ZPROP_INVAL.
static int tb_prop_id(const char *name) {
	if (zfs_prop_user(name)) return TB_USERPROP;
	return (int)zfs_name_to_prop(name);
}

static void tb_put(tb_get_t *g, const char *s) {
	size_t n = strlen(s) + 1; // with the NUL
	if (g->oom) return;
	if (g->len + n > g->cap) {
		size_t c = g->cap ? g->cap : 16384;
		while (c < g->len + n) c *= 2;
		char *b = realloc(g->buf, c);
		if (b == NULL) { g->oom = 1; return; }
		g->buf = b;
		g->cap = c;
	}
	memcpy(g->buf + g->len, s, n);
	g->len += n;
}

static void tb_emit(tb_get_t *g, zfs_handle_t *z) {
	char val[ZFS_MAXPROPLEN];
	const char *name = zfs_get_name(z);
	for (int i = 0; i < g->nprops; i++) {
		const char *v = NULL;
		if (g->ids[i] == TB_USERPROP) {
			nvlist_t *u = zfs_get_user_props(z), *pv;
			const char *s;
			if (u != NULL && nvlist_lookup_nvlist(u, g->props[i], &pv) == 0 &&
			    nvlist_lookup_string(pv, ZPROP_VALUE, &s) == 0)
				v = s;
		} else if (zfs_prop_get(z, (zfs_prop_t)g->ids[i], val, sizeof (val), NULL, NULL, 0, B_TRUE) == 0) {
			v = val;
		}
		if (v == NULL) continue;
		tb_put(g, name);
		tb_put(g, g->props[i]);
		tb_put(g, v);
	}
}

// tb_get_cb records z and, within the depth limit, its child datasets
// and its snapshots (the order does not matter: the caller sorts). It
// closes z, as libzfs's iterators expect of their callbacks.
static int tb_get_cb(zfs_handle_t *z, void *arg) {
	tb_get_t *g = arg;
	tb_emit(g, z);
	if (g->maxdepth < 0 || g->depth < g->maxdepth) {
		zfs_type_t t = zfs_get_type(z);
		g->depth++;
		if (t == ZFS_TYPE_FILESYSTEM)
			(void) zfs_iter_filesystems_v2(z, 0, tb_get_cb, g);
		if (t == ZFS_TYPE_FILESYSTEM || t == ZFS_TYPE_VOLUME)
			(void) zfs_iter_snapshots_v2(z, 0, tb_get_cb, g, 0, 0);
		g->depth--;
	}
	zfs_close(z);
	return 0;
}

// tb_get visits name and its descendants (see tb_get_cb); -1 if name
// cannot be opened (libzfs_errno says why).
static int tb_get(libzfs_handle_t *h, const char *name, tb_get_t *g) {
	zfs_handle_t *z = zfs_open(h, name, ZFS_TYPE_FILESYSTEM | ZFS_TYPE_VOLUME | ZFS_TYPE_SNAPSHOT);
	if (z == NULL) return -1;
	g->depth = 0;
	return tb_get_cb(z, g);
}

// tb_program runs channel program prog on pool with args. When the
// program returns a table with "failed" (a dataset name) and "errno",
// they are copied out; when it fails, its error message is.
static int tb_program(const char *pool, const char *prog, nvlist_t *args,
    char *failed, int failedlen, long long *perrno, char *msg, int msglen) {
	nvlist_t *out = NULL;
	failed[0] = 0;
	msg[0] = 0;
	*perrno = 0;
	int err = lzc_channel_program(pool, prog, ZCP_DEFAULT_INSTRLIMIT, ZCP_DEFAULT_MEMLIMIT, args, &out);
	if (out != NULL) {
		nvlist_t *ret = NULL;
		const char *s = NULL;
		int64_t e = 0;
		if (err == 0 && nvlist_lookup_nvlist(out, ZCP_RET_RETURN, &ret) == 0) {
			if (nvlist_lookup_string(ret, "failed", &s) == 0)
				snprintf(failed, failedlen, "%s", s);
			if (nvlist_lookup_int64(ret, "errno", &e) == 0)
				*perrno = e;
		}
		if (err != 0 && nvlist_lookup_string(out, ZCP_RET_ERROR, &s) == 0)
			snprintf(msg, msglen, "%s", s);
		fnvlist_free(out);
	}
	return err;
}

static void tb_add_strs(nvlist_t *l, const char *k, char **v, int n) {
	fnvlist_add_string_array(l, k, (const char * const *)v, n);
}

static int tb_promote(const char *name) {
	char conflict[ZFS_MAX_DATASET_NAME_LEN];
	conflict[0] = 0;
	return lzc_promote(name, conflict, sizeof (conflict));
}
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// LZCDriver uses libzfs_core (lzc_create, lzc_snapshot, lzc_clone,
// lzc_rollback_to, lzc_destroy_snaps, lzc_destroy, lzc_rename,
// lzc_promote, lzc_exists, lzc_hold, lzc_release, lzc_get_holds, and
// lzc_channel_program to destroy a volume's tree in one transaction group)
// in process, with no command started per call. libzfs_core has no calls to
// mount, to set native properties or to read properties, so mounting
// after Create/Clone, unmounting before Destroy, SetProps and Get go
// through libzfs (serialized: a libzfs handle is not thread-safe). Only
// renaming a filesystem (which remounts its descendants) and a recursive
// Destroy that the kernel refuses in process (clones, holds) use the zfs
// command (the embedded CommandDriver). OpenZFS only: zfs-fuse has its
// own libzfs that talks to its daemon, not /dev/zfs.
type LZCDriver struct {
	cmd *CommandDriver
	mu  sync.Mutex // guards hdl
	hdl *C.libzfs_handle_t
}

var lzcInit struct {
	once sync.Once
	err  error
}

// NewLZCDriver initializes libzfs_core and libzfs and returns the driver.
// It fails (wrapping ErrUnsupported) without /dev/zfs.
func NewLZCDriver() (Driver, error) {
	lzcInit.once.Do(func() {
		if rc := C.libzfs_core_init(); rc != 0 {
			lzcInit.err = fmt.Errorf("zfs: libzfs_core_init: %w (%w)", syscall.Errno(rc), ErrUnsupported)
		}
	})
	if lzcInit.err != nil {
		return nil, lzcInit.err
	}
	h := C.libzfs_init()
	if h == nil {
		return nil, fmt.Errorf("zfs: libzfs_init failed (no /dev/zfs?): %w", ErrUnsupported)
	}
	return &LZCDriver{cmd: NewCommandDriver(), hdl: h}, nil
}

// Close releases the libzfs handle. The driver must not be used after.
func (d *LZCDriver) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.hdl != nil {
		C.libzfs_fini(d.hdl)
		d.hdl = nil
	}
	return nil
}

// Name returns "libzfs_core".
func (d *LZCDriver) Name() string { return "libzfs_core" }

// errnoErr maps an errno from libzfs_core to the package's sentinels.
func errnoErr(op, name string, rc C.int) error {
	if rc == 0 {
		return nil
	}
	return errnoError(op, name, syscall.Errno(rc))
}

// libzfsErr reports the libzfs handle's last error (call with d.mu held).
func (d *LZCDriver) libzfsErr(op, name string) error {
	desc := C.GoString(C.libzfs_error_description(d.hdl))
	code := int(C.libzfs_errno(d.hdl))
	var s error
	switch code {
	case C.EZFS_NOENT:
		s = ErrNotFound
	case C.EZFS_EXISTS:
		s = ErrExists
	case C.EZFS_NOSPC:
		s = ErrNoSpace
	case C.EZFS_BUSY, C.EZFS_MOUNTFAILED, C.EZFS_UMOUNTFAILED:
		s = ErrBusy
	case C.EZFS_INVALIDNAME, C.EZFS_BADPROP, C.EZFS_PROPREADONLY, C.EZFS_PROPTYPE:
		s = ErrInvalidName
	}
	if s == nil {
		return fmt.Errorf("zfs: %s %s: %s (libzfs error %d)", op, name, desc, code)
	}
	return fmt.Errorf("zfs: %s %s: %w: %s", op, name, s, desc)
}

type cstrs []*C.char

func (c *cstrs) add(s string) *C.char { p := C.CString(s); *c = append(*c, p); return p }
func (c cstrs) free() {
	for _, p := range c {
		C.free(unsafe.Pointer(p))
	}
}

// propsNVL builds an nvlist of string properties (nil for none).
func propsNVL(props map[string]string, cs *cstrs) (*C.nvlist_t, error) {
	if len(props) == 0 {
		return nil, nil
	}
	if _, err := propArgs(props); err != nil {
		return nil, err
	}
	l := C.tb_nvl()
	for k, v := range props {
		C.tb_add_str(l, cs.add(k), cs.add(v))
	}
	return l, nil
}

func ctxErr(ctx context.Context) error { return ctx.Err() }

// Create calls lzc_create (after creating missing parents with the
// command, if asked) and mounts the new filesystem through libzfs.
func (d *LZCDriver) Create(ctx context.Context, name string, opts CreateOptions) error {
	if err := ValidateDataset(name); err != nil {
		return err
	}
	return d.makeDataset(ctx, name, opts, func(cs *cstrs, props *C.nvlist_t) error {
		return errnoErr("create", name, C.lzc_create(cs.add(name), C.LZC_DATSET_TYPE_ZFS, props, nil, 0))
	})
}

// makeDataset is what Create and Clone share: name's missing parents (if
// opts asks), its properties, the call that makes it, and its
// mount.
func (d *LZCDriver) makeDataset(ctx context.Context, name string, opts CreateOptions, call func(cs *cstrs, props *C.nvlist_t) error) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	if opts.Parents {
		if err := d.ensureParents(ctx, name); err != nil {
			return err
		}
	}
	var cs cstrs
	defer cs.free()
	props, err := propsNVL(opts.Props, &cs)
	if err != nil {
		return err
	}
	defer C.tb_free(props)
	if err := call(&cs, props); err != nil {
		return err
	}
	return d.mountNew(ctx, name)
}

// mountNew mounts a dataset Create or Clone just made, retrying while the
// mount is busy (as the command driver does); if it cannot, it destroys
// the dataset so that nothing half-made is left behind.
func (d *LZCDriver) mountNew(ctx context.Context, name string) error {
	var err error
	delay := 20 * time.Millisecond
	for i := 0; i < 12; i++ {
		if err = d.mount(name); err == nil || !errors.Is(err, ErrBusy) {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		if ctx.Err() != nil {
			break
		}
		delay = min(2*delay, 500*time.Millisecond)
	}
	if err == nil {
		return nil
	}
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	if derr := errnoErr("destroy", name, C.lzc_destroy(cs)); derr != nil {
		return fmt.Errorf("%w (and destroying the unmounted %s failed: %v)", err, name, derr)
	}
	return fmt.Errorf("%w (the new dataset was destroyed)", err)
}

func (d *LZCDriver) ensureParents(ctx context.Context, name string) error {
	p := Parent(name)
	if p == "" || !strings.Contains(p, "/") {
		return nil
	}
	if ok, err := d.Exists(ctx, p); err != nil || ok {
		return err
	}
	// lzc_create, not `zfs create -p`: a process start per new volume
	// made Backend.CloneVolume 7.6x the bare lzc_clone in the VM bench.
	// A concurrent creator may win the race; that is fine.
	if err := d.Create(ctx, p, CreateOptions{Parents: true}); err != nil && !errors.Is(err, ErrExists) {
		return err
	}
	return nil
}

func (d *LZCDriver) mount(name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	if C.tb_mount(d.hdl, cs) != 0 {
		return d.libzfsErr("mount", name)
	}
	return nil
}

func (d *LZCDriver) unmount(name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	if C.tb_unmount(d.hdl, cs) != 0 {
		return d.libzfsErr("unmount", name)
	}
	return nil
}

// Snapshot calls lzc_snapshot with user properties.
func (d *LZCDriver) Snapshot(ctx context.Context, snap string, props map[string]string) error {
	if err := ValidateSnapshot(snap); err != nil {
		return err
	}
	if err := ctxErr(ctx); err != nil {
		return err
	}
	var cs cstrs
	defer cs.free()
	p, err := propsNVL(props, &cs)
	if err != nil {
		return err
	}
	defer C.tb_free(p)
	return errnoErr("snapshot", snap, C.tb_snapshot(cs.add(snap), p))
}

// Clone calls lzc_clone and mounts the clone through libzfs.
func (d *LZCDriver) Clone(ctx context.Context, snap, name string, opts CreateOptions) error {
	if err := ValidateSnapshot(snap); err != nil {
		return err
	}
	if err := ValidateDataset(name); err != nil {
		return err
	}
	return d.makeDataset(ctx, name, opts, func(cs *cstrs, props *C.nvlist_t) error {
		return errnoErr("clone", snap+" "+name, C.lzc_clone(cs.add(name), cs.add(snap), props))
	})
}

// Rollback calls lzc_rollback_to, which refuses (ErrNotNewest) unless
// snap is the newest snapshot.
func (d *LZCDriver) Rollback(ctx context.Context, snap string) error {
	if err := ValidateSnapshot(snap); err != nil {
		return err
	}
	if err := ctxErr(ctx); err != nil {
		return err
	}
	fs, _, _ := SplitSnapshot(snap)
	var cs cstrs
	defer cs.free()
	rc := C.lzc_rollback_to(cs.add(fs), cs.add(snap))
	if syscall.Errno(rc) == syscall.EXDEV {
		return fmt.Errorf("zfs: rollback %s: %w", snap, ErrNotNewest)
	}
	return errnoErr("rollback", snap, rc)
}

// Rename calls lzc_rename for snapshots and uses the command for
// filesystems (which need unmounting and remounting).
func (d *LZCDriver) Rename(ctx context.Context, from, to string) error {
	if err := ValidateName(from); err != nil {
		return err
	}
	if err := ValidateName(to); err != nil {
		return err
	}
	if !strings.Contains(from, "@") {
		return d.cmd.Rename(ctx, from, to)
	}
	var cs cstrs
	defer cs.free()
	return errnoErr("rename", from, C.lzc_rename(cs.add(from), cs.add(to)))
}

// Promote calls lzc_promote.
func (d *LZCDriver) Promote(ctx context.Context, name string) error {
	if err := ValidateDataset(name); err != nil {
		return err
	}
	var cs cstrs
	defer cs.free()
	rc := C.tb_promote(cs.add(name))
	if syscall.Errno(rc) == syscall.EINVAL {
		return fmt.Errorf("zfs: promote %s: not a clone: %w", name, ErrBusy)
	}
	return errnoErr("promote", name, rc)
}

// Destroy calls lzc_destroy_snaps for a snapshot (deferred if asked) or
// unmounts and lzc_destroy's a filesystem; Recursive uses the command.
func (d *LZCDriver) Destroy(ctx context.Context, name string, opts DestroyOptions) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if opts.Recursive {
		return d.destroyRecursive(ctx, name, opts)
	}
	var cs cstrs
	defer cs.free()
	if strings.Contains(name, "@") {
		def := C.int(0)
		if opts.Defer {
			def = 1
		}
		if C.lzc_exists(cs.add(name)) == C.B_FALSE {
			return fmt.Errorf("zfs: destroy %s: %w", name, ErrNotFound)
		}
		return errnoErr("destroy", name, C.tb_destroy_snap(cs.add(name), def))
	}
	if opts.Defer {
		return fmt.Errorf("%w: deferred destroy of %q: only snapshots can be deferred", ErrInvalidName, name)
	}
	if err := d.unmount(name); err != nil {
		return err
	}
	return errnoErr("destroy", name, C.lzc_destroy(cs.add(name)))
}

// destroyRecursive destroys filesystem name with its descendants and all
// their snapshots in process: the snapshots in one lzc_destroy_snaps
// (atomic: if one of them has a clone or a hold, none is destroyed), then
// the filesystems, deepest first, each unmounted and lzc_destroy'ed. When
// the snapshots cannot go (a clone, a hold) or name is a snapshot, the zfs
// command does the whole job and reports its own error.
func (d *LZCDriver) destroyRecursive(ctx context.Context, name string, opts DestroyOptions) error {
	if strings.Contains(name, "@") {
		return d.cmd.Destroy(ctx, name, opts)
	}
	all, err := d.Get(ctx, []string{name}, []string{"type"}, -1)
	if err != nil {
		return fmt.Errorf("zfs: destroy -r %s: %w", name, err)
	}
	var cs cstrs
	defer cs.free()
	var dss []Dataset
	snaps := C.tb_nvl()
	defer C.tb_free(snaps)
	n := 0
	for _, x := range all {
		if x.Type() == "snapshot" {
			C.tb_add_bool(snaps, cs.add(x.Name))
			n++
		} else {
			dss = append(dss, x)
		}
	}
	if n > 0 {
		var errs *C.nvlist_t
		rc := C.lzc_destroy_snaps(snaps, C.B_FALSE, &errs)
		C.tb_free(errs)
		switch syscall.Errno(rc) {
		case 0:
		case syscall.EEXIST, syscall.EBUSY:
			return d.cmd.Destroy(ctx, name, opts)
		default:
			return errnoErr("destroy -r", name, rc)
		}
	}
	for i := len(dss) - 1; i >= 0; i-- {
		x := dss[i]
		if x.Type() == "filesystem" {
			if err := d.unmount(x.Name); err != nil {
				return err
			}
		}
		if err := errnoErr("destroy", x.Name, C.lzc_destroy(cs.add(x.Name))); err != nil {
			return err
		}
	}
	return nil
}

// destroyTree runs destroyTreeProgram with lzc_channel_program, after
// unmounting the tree's mounted filesystems through libzfs.
func (d *LZCDriver) destroyTree(ctx context.Context, root, markProp, markValue string) error {
	argv, mounted, err := destroyTreePlan(ctx, d, root, markProp, markValue)
	if err != nil {
		return err
	}
	for _, m := range mounted {
		if err := d.unmount(m); err != nil {
			return err
		}
	}
	if err := ctxErr(ctx); err != nil {
		return err
	}
	var cs cstrs
	defer cs.free()
	args := C.tb_nvl()
	defer C.tb_free(args)
	av := (**C.char)(C.calloc(C.size_t(len(argv)), C.size_t(unsafe.Sizeof((*C.char)(nil)))))
	defer C.free(unsafe.Pointer(av))
	for i, a := range argv {
		unsafe.Slice(av, len(argv))[i] = cs.add(a)
	}
	C.tb_add_strs(args, cs.add("argv"), av, C.int(len(argv)))
	pool, _, _ := strings.Cut(root, "/")
	var failed, msg [1024]C.char
	var code C.longlong
	rc := C.tb_program(cs.add(pool), cs.add(destroyTreeProgram), args, &failed[0], C.int(len(failed)), &code, &msg[0], C.int(len(msg)))
	if rc != 0 {
		if m := C.GoString(&msg[0]); m != "" {
			return fmt.Errorf("%w: %s", errnoErr("destroy (channel program)", root, rc), m)
		}
		return errnoErr("destroy (channel program)", root, rc)
	}
	return programFailure(C.GoString(&failed[0]), int64(code))
}

// SetProps sets properties through libzfs (zfs_prop_set_list), which
// unmounts and remounts on a mountpoint change.
func (d *LZCDriver) SetProps(ctx context.Context, name string, props map[string]string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	var cs cstrs
	defer cs.free()
	l, err := propsNVL(props, &cs)
	if err != nil || l == nil {
		return err
	}
	defer C.tb_free(l)
	d.mu.Lock()
	defer d.mu.Unlock()
	if C.tb_set(d.hdl, cs.add(name), l) != 0 {
		return d.libzfsErr("set", name)
	}
	return nil
}

// Get reads properties in process through libzfs (zfs_open, the
// dataset and snapshot iterators, zfs_prop_get with literal values as
// `zfs get -p` prints them, zfs_get_user_props), one ioctl per dataset
// instead of a zfs process per call, and returns them in the order the
// command lists them (see sortDatasets).
func (d *LZCDriver) Get(ctx context.Context, names []string, props []string, depth int) ([]Dataset, error) {
	for _, n := range names {
		if err := ValidateName(n); err != nil {
			return nil, err
		}
	}
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	if len(props) == 0 {
		props = []string{"type"}
	}
	// The order needs each snapshot's createtxg; it is dropped from the
	// result unless asked for.
	hasTxg := false
	for _, p := range props {
		hasTxg = hasTxg || p == "createtxg"
	}
	if !hasTxg {
		props = append(props[:len(props):len(props)], "createtxg")
	}
	var cs cstrs
	defer cs.free()
	g := (*C.tb_get_t)(C.calloc(1, C.size_t(unsafe.Sizeof(C.tb_get_t{}))))
	defer func() { C.free(unsafe.Pointer(g.buf)); C.free(unsafe.Pointer(g)) }()
	ptrSize := C.size_t(unsafe.Sizeof((*C.char)(nil)))
	g.props = (**C.char)(C.calloc(C.size_t(len(props)), ptrSize))
	defer C.free(unsafe.Pointer(g.props))
	g.ids = (*C.int)(C.calloc(C.size_t(len(props)), C.size_t(unsafe.Sizeof(C.int(0)))))
	defer C.free(unsafe.Pointer(g.ids))
	pv := unsafe.Slice(g.props, len(props))
	iv := unsafe.Slice(g.ids, len(props))
	for i, p := range props {
		pv[i] = cs.add(p)
		iv[i] = C.tb_prop_id(pv[i])
		if iv[i] == C.ZPROP_INVAL {
			return nil, fmt.Errorf("zfs: get: %w: no property %q", ErrInvalidName, p)
		}
	}
	g.nprops = C.int(len(props))
	g.maxdepth = C.int(depth)
	if depth < 0 {
		g.maxdepth = -1
	}
	d.mu.Lock()
	for _, n := range names {
		if C.tb_get(d.hdl, cs.add(n), g) != 0 {
			err := d.libzfsErr("get", n)
			d.mu.Unlock()
			return nil, err
		}
	}
	d.mu.Unlock()
	if g.oom != 0 {
		return nil, fmt.Errorf("zfs: get %v: out of memory", names)
	}
	var res []Dataset
	if g.len > 0 {
		res = parseRecords(C.GoBytes(unsafe.Pointer(g.buf), C.int(g.len)))
	}
	sortDatasets(res)
	if !hasTxg {
		for _, x := range res {
			delete(x.Props, "createtxg")
		}
	}
	return res, nil
}

// Exists calls lzc_exists.
func (d *LZCDriver) Exists(ctx context.Context, name string) (bool, error) {
	if err := ValidateName(name); err != nil {
		return false, err
	}
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	return C.lzc_exists(cs) != C.B_FALSE, nil
}

// Hold calls lzc_hold (a hold that outlives the process: no cleanup fd).
func (d *LZCDriver) Hold(ctx context.Context, snap, tag string) error {
	if err := ValidateSnapshot(snap); err != nil {
		return err
	}
	if err := ValidateComponent(tag); err != nil {
		return err
	}
	var cs cstrs
	defer cs.free()
	return errnoErr("hold", snap, C.tb_hold(cs.add(snap), cs.add(tag)))
}

// Release calls lzc_release.
func (d *LZCDriver) Release(ctx context.Context, snap, tag string) error {
	if err := ValidateSnapshot(snap); err != nil {
		return err
	}
	if err := ValidateComponent(tag); err != nil {
		return err
	}
	var cs cstrs
	defer cs.free()
	return errnoErr("release", snap, C.tb_release(cs.add(snap), cs.add(tag)))
}

// Holds calls lzc_get_holds.
func (d *LZCDriver) Holds(ctx context.Context, snap string) ([]string, error) {
	if err := ValidateSnapshot(snap); err != nil {
		return nil, err
	}
	var cs cstrs
	defer cs.free()
	buf := (*C.char)(C.malloc(64 << 10))
	defer C.free(unsafe.Pointer(buf))
	if err := errnoErr("holds", snap, C.tb_holds(cs.add(snap), buf, 64<<10)); err != nil {
		return nil, err
	}
	var tags []string
	b := C.GoBytes(unsafe.Pointer(buf), 64<<10)
	for _, t := range strings.Split(string(b), "\x00") {
		if t == "" {
			break
		}
		tags = append(tags, t)
	}
	return tags, nil
}

var (
	_ Driver        = (*LZCDriver)(nil)
	_ treeDestroyer = (*LZCDriver)(nil)
)
