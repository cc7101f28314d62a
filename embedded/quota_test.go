package embedded_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/snapshot/btrfs/btrfstest"
	"github.com/turnbox/turnbox/zfs/zfstest"
)

// run1 runs one tool call and returns its response and error as they are.
func run1(t *testing.T, e environment.Environment, p environment.ToolParams) (*environment.ToolResponse, error) {
	t.Helper()
	req, err := environment.NewToolRequest(callID(), p)
	if err != nil {
		t.Fatal(err)
	}
	return e.ExecuteTool(context.Background(), req, nil)
}

// chargesPins reports whether storage's quota counts what snapshots pin
// on this machine (btrfs with simple quotas).
func chargesPins(storage embedded.StorageBackend) bool {
	_, err := os.Stat("/sys/fs/btrfs/features/simple_quota")
	return storage == embedded.StorageBackendBtrfs && err == nil
}

// runOK runs a bash command and reports its failure.
func runOK(e environment.Environment, command string) error {
	req, err := environment.NewToolRequest(callID(), environment.BashParams{Command: command})
	if err != nil {
		return err
	}
	r, err := e.ExecuteTool(context.Background(), req, nil)
	if err == nil && r.IsError {
		err = fmt.Errorf("exit %d: %s", r.ExitCode, r.Content)
	}
	return err
}

// eventually retries fn for up to 10 s: freed space under a quota shows
// once the kernel has dropped deleted trees, moments after the call.
func eventually(t *testing.T, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func wantLimit(t *testing.T, err error, what string) {
	t.Helper()
	if !errors.Is(err, environment.ErrLimitExceeded) {
		t.Fatalf("%s: %v, want ErrLimitExceeded", what, err)
	}
	if !strings.Contains(err.Error(), "quota") {
		t.Fatalf("%s: error %q does not mention the quota", what, err)
	}
}

// localdisk records the quota and the host enforces it after the fact: a
// write_file that would go over is refused with nothing written; a bash
// command can overshoot, and then reports ErrLimitExceeded with its
// response, write_file is refused until usage drops, bash still runs (so
// files can be deleted), snapshots work, and a rollback makes room again.
func TestDiskQuotaLocalDisk(t *testing.T) {
	ctx := context.Background()
	const quota = 1 << 20
	h := newHost(t, embedded.Config{DiskQuotaBytes: quota})
	e, err := h.CreateSession(ctx, environment.SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	call(t, e, environment.WriteFileParams{Path: "keep.txt", Content: strings.Repeat("k", 100<<10)})
	small, err := e.TurnComplete(ctx, "small")
	if err != nil {
		t.Fatal(err)
	}
	info, _ := h.Session(e.SessionID())
	if info.DiskQuotaBytes != quota {
		t.Fatalf("SessionInfo.DiskQuotaBytes = %d", info.DiskQuotaBytes)
	}

	// A write that would go over: refused, nothing written.
	_, err = run1(t, e, environment.WriteFileParams{Path: "big.txt", Content: strings.Repeat("b", 2<<20)})
	wantLimit(t, err, "write_file of 2 MiB under a 1 MiB quota")
	if _, err := os.Stat(filepath.Join(info.Path, "big.txt")); err == nil {
		t.Fatal("a refused write_file left its file")
	}

	// bash overshoots: reported with its response.
	resp, err := run1(t, e, environment.BashParams{Command: "head -c 3000000 /dev/zero > big.bin && echo wrote"})
	wantLimit(t, err, "bash writing 3 MB under a 1 MiB quota")
	if resp == nil || !resp.IsError || !strings.Contains(resp.Content, "wrote") || !strings.Contains(resp.Content, "disk quota") {
		t.Fatalf("bash response over quota = %+v", resp)
	}
	// Over: file writes refused, reads and bash still work, a snapshot too.
	_, err = run1(t, e, environment.WriteFileParams{Path: "x.txt", Content: "x"})
	wantLimit(t, err, "write_file while over quota")
	if got := call(t, e, environment.ReadFileParams{Path: "keep.txt"}).Content; len(got) != 100<<10 {
		t.Fatalf("keep.txt has %d bytes while over quota", len(got))
	}
	if r, err := run1(t, e, environment.BashParams{Command: "ls big.bin"}); err != nil || r.IsError {
		t.Fatalf("read-only bash while over quota: %+v, %v", r, err)
	}
	// The disk limit counts snapshots: none is taken while over it.
	_, err = e.TurnComplete(ctx, "over")
	wantLimit(t, err, "snapshot while over quota")
	// Deleting makes room.
	if r, err := run1(t, e, environment.BashParams{Command: "rm big.bin"}); err != nil || r.IsError {
		t.Fatalf("rm while over quota: %+v, %v", r, err)
	}
	call(t, e, environment.WriteFileParams{Path: "x.txt", Content: "x"})

	// Over again, then a rollback under the quota makes room.
	if _, err := run1(t, e, environment.BashParams{Command: "head -c 3000000 /dev/zero > big.bin"}); !errors.Is(err, environment.ErrLimitExceeded) {
		t.Fatalf("second overshoot: %v", err)
	}
	if err := e.Rollback(ctx, small.ID); err != nil {
		t.Fatal(err)
	}
	call(t, e, environment.WriteFileParams{Path: "y.txt", Content: "y"})

	// Per-session quota: lifted, then back.
	if err := h.SetDiskQuota(ctx, e.SessionID(), -1); !errors.Is(err, environment.ErrInvalidArgument) {
		t.Fatalf("SetDiskQuota(-1): %v", err)
	}
	if err := h.SetDiskQuota(ctx, e.SessionID(), 0); err != nil {
		t.Fatal(err)
	}
	call(t, e, environment.WriteFileParams{Path: "big.txt", Content: strings.Repeat("b", 2<<20)})
	if err := h.SetDiskQuota(ctx, e.SessionID(), quota); err != nil {
		t.Fatal(err)
	}
	_, err = run1(t, e, environment.WriteFileParams{Path: "z.txt", Content: "z"})
	wantLimit(t, err, "write_file after lowering the quota below usage")
}

// btrfs and zfs enforce the quota in the kernel: a bash command's write
// fails with EDQUOT and the call reports ErrLimitExceeded with its
// response, write_file is refused with the file unchanged, the session
// stays usable, deleting or rolling back makes room, a fork keeps its
// parent's own quota, and the quota survives a host restart.
func TestDiskQuotaKernel(t *testing.T) {
	for _, storage := range []embedded.StorageBackend{embedded.StorageBackendBtrfs, embedded.StorageBackendZFS} {
		t.Run(string(storage), func(t *testing.T) {
			ctx := context.Background()
			const quota = 8 << 20
			cfg := embedded.Config{StateDir: t.TempDir(), StorageBackend: storage, ContainerRuntime: embedded.ContainerRuntimeNone,
				Logger: quietLogger(), DiskQuotaBytes: quota}
			switch storage {
			case embedded.StorageBackendBtrfs:
				cfg.StorageRoot = btrfstest.Mount(t, 1<<30)
			case embedded.StorageBackendZFS:
				cfg.ZFSDataset = zfstest.NewPool(t, 512<<20)
			}
			h, err := embedded.NewHost(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			closed := false
			t.Cleanup(func() {
				if !closed {
					h.Close(ctx)
				}
			})
			e, err := h.CreateSession(ctx, environment.SessionConfig{SessionID: "q"})
			if err != nil {
				t.Fatal(err)
			}
			call(t, e, environment.WriteFileParams{Path: "keep.txt", Content: "kept"})
			small, err := e.TurnComplete(ctx, "small")
			if err != nil {
				t.Fatal(err)
			}
			resp, err := run1(t, e, environment.BashParams{Command: "head -c 20000000 /dev/urandom > big.bin"})
			wantLimit(t, err, "bash writing 20 MB under an 8 MiB quota")
			if resp == nil || !resp.IsError || !strings.Contains(strings.ToLower(resp.Content), "quota") {
				t.Fatalf("bash response = %+v", resp)
			}
			_, err = run1(t, e, environment.WriteFileParams{Path: "keep.txt", Content: strings.Repeat("w", environment.MaxFileContentLength)})
			wantLimit(t, err, "write_file of 8 MiB under a full 8 MiB quota")
			if got := call(t, e, environment.ReadFileParams{Path: "keep.txt"}).Content; got != "kept" {
				t.Fatalf("keep.txt after a refused write = %q", got)
			}
			// At the quota, the tree and the small snapshot may take just
			// over the limit (which counts snapshots): then no snapshot.
			full, err := e.TurnComplete(ctx, "full")
			if err != nil && !errors.Is(err, environment.ErrLimitExceeded) {
				t.Fatalf("snapshot at the quota: %v", err)
			}
			if err == nil && chargesPins(storage) {
				// The full snapshot holds big.bin: deleting the file frees
				// nothing, deleting the snapshot does.
				r, err := run1(t, e, environment.BashParams{Command: "rm big.bin && head -c 1000000 /dev/urandom > one.bin"})
				wantLimit(t, err, "a write after deleting a file that a snapshot holds")
				if !strings.Contains(r.Content, "DeleteSnapshot") {
					t.Fatalf("the quota notice does not name the remedy: %q", r.Content)
				}
				if err := e.DeleteSnapshot(ctx, full.ID); err != nil {
					t.Fatal(err)
				}
			}
			// Deleting makes room (once the kernel has dropped what a
			// deleted snapshot held).
			eventually(t, "a 1 MB write after deleting big.bin", func() error {
				return runOK(e, "rm -f big.bin && head -c 1000000 /dev/urandom > one.bin")
			})
			// Full again; a rollback to the small snapshot makes room.
			if _, err := run1(t, e, environment.BashParams{Command: "head -c 20000000 /dev/urandom > big.bin"}); !errors.Is(err, environment.ErrLimitExceeded) {
				t.Fatalf("second fill: %v", err)
			}
			if err := e.Rollback(ctx, small.ID); err != nil {
				t.Fatal(err)
			}
			eventually(t, "4 MB after rolling back under the quota", func() error {
				return runOK(e, "head -c 4000000 /dev/urandom > four.bin")
			})

			// Per-session quota, inherited by a fork.
			if err := h.SetDiskQuota(ctx, "q", 2<<20); err != nil {
				t.Fatal(err)
			}
			// (Over its new 2 MiB limit, q takes no snapshot, unless the
			// quota counts what snapshots pin: one takes no space then.)
			if _, err := e.TurnComplete(ctx, ""); chargesPins(storage) && err != nil {
				t.Fatalf("snapshot of 4 MB under a 2 MiB limit that counts pins: %v", err)
			} else if !chargesPins(storage) && !errors.Is(err, environment.ErrLimitExceeded) {
				t.Fatalf("snapshot of 4 MB under a 2 MiB limit: %v, want ErrLimitExceeded", err)
			}
			f, err := h.Fork(ctx, small.ID, environment.SessionConfig{SessionID: "f"})
			if err != nil {
				t.Fatal(err)
			}
			if fi, _ := h.Session("f"); fi.DiskQuotaBytes != 2<<20 {
				t.Fatalf("fork's quota = %d, want its parent's 2 MiB", fi.DiskQuotaBytes)
			}
			if _, err := run1(t, f, environment.BashParams{Command: "head -c 3000000 /dev/urandom > more.bin"}); !errors.Is(err, environment.ErrLimitExceeded) {
				t.Fatalf("fork writing past its 2 MiB quota: %v", err)
			}

			// Restart: quotas are kept.
			if err := h.Close(ctx); err != nil {
				t.Fatal(err)
			}
			closed = true
			h2, err := embedded.NewHost(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { h2.Close(ctx) })
			for id, want := range map[string]int64{"q": 2 << 20, "f": 2 << 20} {
				if info, _ := h2.Session(id); info.DiskQuotaBytes != want {
					t.Errorf("after restart %s's quota = %d, want %d", id, info.DiskQuotaBytes, want)
				}
			}
			e2 := h2.NewEnvironment()
			if err := e2.AttachSession("q"); err != nil {
				t.Fatal(err)
			}
			if _, err := run1(t, e2, environment.BashParams{Command: "head -c 3000000 /dev/urandom > more.bin"}); !errors.Is(err, environment.ErrLimitExceeded) {
				t.Fatalf("after restart, writing past the quota: %v", err)
			}
		})
	}
}
