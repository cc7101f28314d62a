package agent

import (
	"errors"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// waitExit waits for the exit of command pid: its status comes on waitCh
// (from the reaper or the launcher), or, without one, from wait4.
func waitExit(pid int, waitCh <-chan syscall.WaitStatus) syscall.WaitStatus {
	var ws syscall.WaitStatus
	if waitCh != nil {
		return <-waitCh
	}
	for {
		_, err := syscall.Wait4(pid, &ws, 0, nil)
		if err != syscall.EINTR {
			return ws
		}
	}
}

// reaper reaps every child of an init agent and hands the statuses of its
// commands to their waiters.
type reaper struct {
	mu      sync.Mutex
	waiters map[int]chan syscall.WaitStatus
	// unclaimed keeps the statuses of the last reaped processes nobody
	// waited for (oldest first in order), so that adopt finds a command
	// of a dead launcher that was reaped before it was adopted.
	unclaimed map[int]syscall.WaitStatus
	order     []int
	sig       chan os.Signal
	quit      chan struct{}
}

// maxUnclaimed bounds reaper.unclaimed.
const maxUnclaimed = 4096

func startReaper() *reaper {
	r := &reaper{
		waiters:   make(map[int]chan syscall.WaitStatus),
		unclaimed: make(map[int]syscall.WaitStatus),
		sig:       make(chan os.Signal, 1),
		quit:      make(chan struct{}),
	}
	signal.Notify(r.sig, syscall.SIGCHLD)
	go r.loop()
	return r
}

func (r *reaper) loop() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			if err != nil || pid <= 0 {
				break
			}
			r.mu.Lock()
			ch := r.waiters[pid]
			delete(r.waiters, pid)
			if ch == nil {
				if len(r.order) >= maxUnclaimed {
					delete(r.unclaimed, r.order[0])
					r.order = r.order[1:]
				}
				r.unclaimed[pid] = ws
				r.order = append(r.order, pid)
			}
			r.mu.Unlock()
			if ch != nil {
				ch <- ws
			}
		}
		select {
		case <-r.sig:
		case <-tick.C:
		case <-r.quit:
			return
		}
	}
}

// forget drops a stale unclaimed status of pid: a new process has it now.
func (r *reaper) forget(pid int) {
	r.mu.Lock()
	delete(r.unclaimed, pid)
	r.mu.Unlock()
}

// adopt makes ch receive the wait status of pid, a process that became
// the agent's child when its parent (a launcher) died.
func (r *reaper) adopt(pid int, ch chan syscall.WaitStatus) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ws, ok := r.unclaimed[pid]; ok {
		delete(r.unclaimed, pid)
		ch <- ws
		return
	}
	r.waiters[pid] = ch
	// Wake the loop: the process may have become a zombie child of ours
	// before this call, with its SIGCHLD already handled.
	select {
	case r.sig <- syscall.SIGCHLD:
	default:
	}
}

// forkExec runs fork, which starts a child of the agent, and registers
// the child: its exit status comes on the returned channel. r.mu is held
// across fork, so that loop cannot reap the child before it is
// registered (and take its status for an unclaimed one).
func (r *reaper) forkExec(fork func() (int, error)) (int, chan syscall.WaitStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := fork()
	if err != nil {
		return 0, nil, err
	}
	ch := make(chan syscall.WaitStatus, 1)
	r.waiters[pid] = ch
	return pid, ch, nil
}

func (r *reaper) stop() {
	signal.Stop(r.sig)
	close(r.quit)
}
