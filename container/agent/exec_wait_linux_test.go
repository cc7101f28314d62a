package agent

import (
	"syscall"
	"testing"
	"time"
)

// TestReaperForkExecChildExitsDuringSpawn: a child that exits, and whose
// SIGCHLD the reaper handles, before forkExec has registered it still has
// its status delivered to forkExec's channel (not kept as unclaimed).
func TestReaperForkExecChildExitsDuringSpawn(t *testing.T) {
	r := startReaper()
	defer r.stop()
	pid, ch, err := r.forkExec(func() (int, error) {
		pid, err := syscall.ForkExec("/bin/sh", []string{"sh", "-c", "exit 7"}, &syscall.ProcAttr{})
		if err != nil {
			return 0, err
		}
		// Still inside the spawn: let the child exit (a zombie, or
		// gone if the reaper's loop already took it on its SIGCHLD)
		// and the reaper wake up for it before the caller can
		// register.
		deadline := time.Now().Add(10 * time.Second)
		for st := procState(pid); st != 'Z' && st != 0; st = procState(pid) {
			if time.Now().After(deadline) {
				t.Errorf("child %d did not exit", pid)
				break
			}
			time.Sleep(time.Millisecond)
		}
		select {
		case r.sig <- syscall.SIGCHLD:
		default:
		}
		time.Sleep(100 * time.Millisecond)
		return pid, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case ws := <-ch:
		if !ws.Exited() || ws.ExitStatus() != 7 {
			t.Errorf("status of %d: %v, want exit 7", pid, ws)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the status of child %d, which exited during its spawn, was not delivered", pid)
	}
	r.mu.Lock()
	_, unclaimed := r.unclaimed[pid]
	r.mu.Unlock()
	if unclaimed {
		t.Errorf("child %d's status was kept as unclaimed", pid)
	}
}
