package embedded_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
)

// memCounter keeps a counter in its shell's memory and answers each
// request on /tmp/req (the name of a reply FIFO) with "<counter> <the
// content of marker in its cwd><$TB_MARK>", appending the counter to a log file
// it keeps open on fd 3. Nothing of the counter is read from a file: an
// answer after a restore comes from the restored memory.
const memCounter = `mkfifo /tmp/req && cd /workspace/sub && exec 3>>log && i=0 &&
while true; do r=; read r < /tmp/req; [ -p "$r" ] || continue; i=$((i+1)); echo $i >&3; echo "$i $(cat marker)$TB_MARK" > "$r"; done`

// memListener serves "listening" on 127.0.0.1:8080 (loopback).
const memListener = `mkdir -p /tmp/www && echo listening > /tmp/www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /tmp/www`

// gvisorMemHost opens a localdisk × gvisor host with poolSize pooled
// sandboxes.
func gvisorMemHost(t *testing.T, poolSize int) (embedded.Config, *embedded.Host) {
	t.Helper()
	return gvisorMemHostOn(t, embedded.StorageBackendLocalDisk, poolSize)
}

// gvisorMemHostOn is gvisorMemHost on storage.
func gvisorMemHostOn(t *testing.T, storage embedded.StorageBackend, poolSize int) (embedded.Config, *embedded.Host) {
	t.Helper()
	cfg := matrixConfig(t, storage, embedded.ContainerRuntimeGVisor)
	cfg.PoolSize = poolSize
	h := openCheckedHost(t, cfg)
	if !h.Capabilities().MemorySnapshots {
		t.Fatal("gvisor host without Capabilities.MemorySnapshots")
	}
	return cfg, h
}

// startCounter starts memCounter and memListener in e's session and
// waits until both answer.
func startCounter(t *testing.T, e *embedded.Environment) {
	t.Helper()
	bash(t, e, "mkdir -p sub && echo orig > sub/marker")
	for _, script := range []string{memCounter, memListener} {
		// TB_MARK: the counter's environment comes back with it.
		pc := environment.ProcessConfig{Args: []string{"sh", "-c", script}, Env: map[string]string{"TB_MARK": "+env"}}
		if _, err := e.StartProcess(context.Background(), pc); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for call(t, e, environment.BashParams{Command: "test -p /tmp/req && wget -q -O - http://127.0.0.1:8080/"}).Content != "listening\n" {
		if time.Now().After(deadline) {
			t.Fatal("the servers did not come up")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ask sends one request to memCounter and returns its answer.
func ask(t *testing.T, e environment.Environment) string {
	t.Helper()
	return strings.TrimSpace(bash(t, e, `f=/tmp/r$$; mkfifo $f && echo $f > /tmp/req && cat $f; rm -f $f`))
}

// expectAsk checks memCounter's next answer.
func expectAsk(t *testing.T, who string, e environment.Environment, want string) {
	t.Helper()
	if got := ask(t, e); got != want {
		t.Fatalf("%s: counter answered %q, want %q", who, got, want)
	}
}

// memImage is the directory of a session's memory image name.
func memImage(cfg embedded.Config, session, name string) string {
	return filepath.Join(cfg.StateDir, "memory", session, name)
}

// Rollback and Fork to a memory snapshot bring back the processes as
// they were at the snapshot: a counter in memory, the cwd and an open fd
// (the log) on the snapshot's files, a loopback listener; a fork goes on
// independently; DeleteSnapshot and Destroy delete the images.
func TestMemorySnapshotRollbackAndFork(t *testing.T) {
	for _, storage := range []embedded.StorageBackend{embedded.StorageBackendLocalDisk, embedded.StorageBackendBtrfs} {
		t.Run(string(storage), func(t *testing.T) { checkMemoryRollbackAndFork(t, storage) })
	}
}

// checkMemoryRollbackAndFork is TestMemorySnapshotRollbackAndFork on
// storage.
func checkMemoryRollbackAndFork(t *testing.T, storage embedded.StorageBackend) {
	ctx := context.Background()
	// With a pool: a memory session and its fork must not take a pooled
	// sandbox (the fork's counter below comes from the image).
	cfg, h := gvisorMemHostOn(t, storage, 1)
	e, err := h.CreateSession(ctx, environment.SessionConfig{SnapshotMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	startCounter(t, e)
	expectAsk(t, "before", e, "1 orig+env")
	expectAsk(t, "before", e, "2 orig+env")
	// A command runs while the snapshot is taken; it runs on after the
	// rollback.
	if _, err := e.StartProcess(ctx, environment.ProcessConfig{Command: "while true; do echo x >> ticks; sleep 0.05; done"}); err != nil {
		t.Fatal(err)
	}
	snap, err := e.TurnComplete(ctx, "mem")
	if err != nil {
		t.Fatal(err)
	}
	img := memImage(cfg, e.SessionID(), "turn-1")
	if fi, err := os.Stat(img); !snap.Memory || snap.MemoryBytes <= 0 || err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("snapshot %+v; image dir %v, %v", snap, fi, err)
	}
	expectAsk(t, "after the snapshot", e, "3 orig+env")
	bash(t, e, "echo later > sub/marker")
	expectAsk(t, "after the snapshot", e, "4 later+env")

	if err := e.Rollback(ctx, snap.ID); err != nil {
		t.Fatal(err)
	}
	expectAsk(t, "rolled back", e, "3 orig+env") // 2 in memory at the snapshot
	if got := bash(t, e, "wget -q -O - http://127.0.0.1:8080/ && tr '\\n' ' ' < sub/log"); got != "listening\n1 2 3 " {
		t.Fatalf("after rollback: listener and log %q", got)
	}
	ticks := bash(t, e, "wc -l < ticks")
	time.Sleep(300 * time.Millisecond)
	if again := bash(t, e, "wc -l < ticks"); again == ticks {
		t.Fatalf("the command running at the snapshot did not run on after the rollback (%s ticks)", ticks)
	}

	fork, err := e.Fork(ctx, snap.ID, environment.SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	expectAsk(t, "parent", e, "4 orig+env")
	expectAsk(t, "parent", e, "5 orig+env")
	expectAsk(t, "fork", fork, "3 orig+env")
	fsnap, err := fork.(environment.TurnCompleter).TurnComplete(ctx, "")
	if err != nil || !fsnap.Memory {
		t.Fatalf("fork's snapshot %+v, %v: want memory (inherited)", fsnap, err)
	}

	if err := e.DeleteSnapshot(ctx, snap.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(img); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("image of a deleted snapshot: %v", err)
	}
	if _, err := e.TurnComplete(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if err := e.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(cfg.StateDir, "memory", e.SessionID())); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("images of a destroyed session: %v", err)
	}
	expectAsk(t, "fork after its parent's destroy", fork, "4 orig+env")
}

// A session without SnapshotMemory snapshots files only, as before: no
// image, and a rollback kills its processes.
func TestFilesOnlySnapshotUnchanged(t *testing.T) {
	ctx := context.Background()
	cfg, h := gvisorMemHost(t, 0)
	e, err := h.CreateSession(ctx, environment.SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	startCounter(t, e)
	snap, err := e.TurnComplete(ctx, "")
	if err != nil || snap.Memory || snap.MemoryBytes != 0 {
		t.Fatalf("snapshot %+v, %v: want files only", snap, err)
	}
	if _, err := os.Stat(memImage(cfg, e.SessionID(), "turn-1")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("files-only snapshot has an image: %v", err)
	}
	if err := e.Rollback(ctx, snap.ID); err != nil {
		t.Fatal(err)
	}
	if got := call(t, e, environment.BashParams{Command: "test -p /tmp/req || echo gone"}).Content; got != "gone\n" {
		t.Fatalf("the counter survived a files-only rollback: %q", got)
	}
}

// Hibernate saves the session to disk; a new host on the same state dir
// keeps it hibernated, and Resume brings the counter back. Images no
// record names (a crash mid-snapshot) are deleted at open; acknowledged
// ones stay restorable.
func TestHibernateAcrossRestart(t *testing.T) {
	ctx := context.Background()
	cfg, h := gvisorMemHost(t, 0)
	e, err := h.CreateSession(ctx, environment.SessionConfig{SnapshotMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	id := e.SessionID()
	startCounter(t, e)
	expectAsk(t, "before", e, "1 orig+env")
	snap, err := e.TurnComplete(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	expectAsk(t, "before", e, "2 orig+env")
	if err := e.Hibernate(ctx); err != nil {
		t.Fatal(err)
	}
	if info, err := h.Session(id); err != nil || !info.Hibernated || info.State != environment.StatePaused {
		t.Fatalf("after Hibernate: %+v, %v", info, err)
	}
	// What crashes leave: an image of a turn the ledger never recorded,
	// one of a session that is not (any more), and the hibernation
	// image of an active session (a crash mid-Hibernate).
	other, err := h.CreateSession(ctx, environment.SessionConfig{SnapshotMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	leftovers := []string{memImage(cfg, id, "turn-7"), memImage(cfg, "ghost", "turn-1"), memImage(cfg, other.SessionID(), "hibernate")}
	for _, d := range leftovers {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.Close(ctx); err != nil {
		t.Fatal(err)
	}

	h2 := openCheckedHost(t, cfg)
	for _, d := range append(leftovers, filepath.Join(cfg.StateDir, "memory", "ghost")) {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("unrecorded image %s left after open: %v", d, err)
		}
	}
	if info, err := h2.Session(id); err != nil || !info.Hibernated || info.State != environment.StatePaused {
		t.Fatalf("after reopen: %+v, %v", info, err)
	}
	if info, err := h2.Session(other.SessionID()); err != nil || info.Hibernated || info.State != environment.StateActive {
		t.Fatalf("a session not hibernated, after reopen: %+v, %v", info, err)
	}
	e2 := h2.NewEnvironment()
	if err := e2.AttachSession(id); err != nil {
		t.Fatal(err)
	}
	if err := e2.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	expectAsk(t, "resumed", e2, "3 orig+env")
	if info, _ := h2.Session(id); info.Hibernated || info.State != environment.StateActive {
		t.Fatalf("after Resume: %+v", info)
	}
	if _, err := os.Stat(memImage(cfg, id, "hibernate")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("hibernation image left after Resume: %v", err)
	}
	if err := e2.Rollback(ctx, snap.ID); err != nil {
		t.Fatal(err)
	}
	expectAsk(t, "rolled back after the restart", e2, "2 orig+env")
}

// A files-only session whose sandbox came from the pool hibernates and
// resumes in the same host with its processes.
func TestHibernatePooledSession(t *testing.T) {
	ctx := context.Background()
	cfg, h := gvisorMemHost(t, 1)
	deadline := time.Now().Add(30 * time.Second)
	for h.PoolReady() < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the pool did not fill")
		}
		time.Sleep(50 * time.Millisecond)
	}
	e, err := h.CreateSession(ctx, environment.SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	startCounter(t, e)
	expectAsk(t, "before", e, "1 orig+env")
	if err := e.Hibernate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ExecuteTool(ctx, environment.ToolRequest{ToolName: "bash", Input: []byte(`{"command":"true"}`)}, nil); !errors.Is(err, environment.ErrNotActive) {
		t.Fatalf("tool call on a hibernated session: %v", err)
	}
	if err := e.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	expectAsk(t, "resumed", e, "2 orig+env")
	if _, err := os.Stat(filepath.Join(cfg.StateDir, "memory", e.SessionID(), "hibernate")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("hibernation image left after Resume: %v", err)
	}
}

// The disk limit counts memory images: with 30 MB in the sandbox's
// memory, a 20 MB limit admits the first snapshot (the files take less) but not
// the next (the first's image is over the limit by itself).
func TestMemoryImagesCountInDiskLimit(t *testing.T) {
	ctx := context.Background()
	_, h := gvisorMemHost(t, 0)
	const limit = 20 << 20
	e, err := h.CreateSession(ctx, environment.SessionConfig{SnapshotMemory: true, Limits: environment.Limits{DiskBytes: limit}})
	if err != nil {
		t.Fatal(err)
	}
	// /dev/shm is a tmpfs of the sandbox's kernel: its pages are in the image.
	bash(t, e, "head -c 30000000 /dev/urandom > /dev/shm/hog")
	snap, err := e.TurnComplete(ctx, "")
	if err != nil || snap.MemoryBytes <= limit {
		t.Fatalf("first snapshot %+v, %v: want an image over %d bytes", snap, err, limit)
	}
	if _, err := e.TurnComplete(ctx, ""); !errors.Is(err, environment.ErrLimitExceeded) {
		t.Fatalf("second snapshot, over the limit with the first's image: %v", err)
	}
}

// Runtimes without memory snapshots refuse SessionConfig.SnapshotMemory
// and Hibernate, and create nothing.
func TestMemorySnapshotsRefused(t *testing.T) {
	ctx := context.Background()
	h := newHost(t, embedded.Config{})
	if h.Capabilities().MemorySnapshots {
		t.Fatal("none runtime claims memory snapshots")
	}
	if _, err := h.CreateSession(ctx, environment.SessionConfig{SessionID: "m", SnapshotMemory: true}); !errors.Is(err, environment.ErrCapabilityNotSupported) {
		t.Fatalf("SnapshotMemory on none: %v", err)
	}
	if n := len(h.Sessions()); n != 0 {
		t.Fatalf("a refused create left %d sessions", n)
	}
	e, err := h.CreateSession(ctx, environment.SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Hibernate(ctx); !errors.Is(err, environment.ErrCapabilityNotSupported) {
		t.Fatalf("Hibernate on none: %v", err)
	}
	if e.State() != environment.StateActive {
		t.Fatalf("state after a refused Hibernate: %s", e.State())
	}
	// runc: no working CRIU on these machines.
	rh := openCheckedHost(t, matrixConfig(t, embedded.StorageBackendLocalDisk, embedded.ContainerRuntimeRunc))
	if rh.Capabilities().MemorySnapshots {
		t.Fatal("runc claims memory snapshots")
	}
	if _, err := rh.CreateSession(ctx, environment.SessionConfig{SnapshotMemory: true}); !errors.Is(err, environment.ErrCapabilityNotSupported) {
		t.Fatalf("SnapshotMemory on runc: %v", err)
	}
}

// A crash during Hibernate, before the ledger recorded it, leaves an
// image and a backend snapshot named hibernate beside an active session:
// the next host deletes both and keeps the session active.
func TestCrashMidHibernateCleanedUp(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	h, err := embedded.NewHost(ctx, embedded.Config{StateDir: dir, Logger: quietLogger(), ContainerRuntime: embedded.ContainerRuntimeNone})
	if err != nil {
		t.Fatal(err)
	}
	e, err := h.CreateSession(ctx, environment.SessionConfig{SessionID: "half"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Storage().Snapshot(ctx, "half", "hibernate"); err != nil {
		t.Fatal(err)
	}
	img := memImage(embedded.Config{StateDir: dir}, "half", "hibernate")
	if err := os.MkdirAll(img, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(ctx); err != nil {
		t.Fatal(err)
	}
	h2 := newHost(t, embedded.Config{StateDir: dir})
	if info, err := h2.Session(e.SessionID()); err != nil || info.Hibernated || info.State != environment.StateActive {
		t.Fatalf("after reopen: %+v, %v", info, err)
	}
	snaps, err := h2.Storage().Snapshots(ctx, "half")
	if err != nil || len(snaps) != 0 {
		t.Fatalf("backend snapshots after reopen: %+v, %v", snaps, err)
	}
	if _, err := os.Stat(img); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("hibernation image after reopen: %v", err)
	}
}
