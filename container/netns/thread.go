package netns

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// onLockedThread runs fn on a fresh goroutine locked to its OS thread
// after move switched that thread's network namespace (netns.Set or
// unshare(CLONE_NEWNET)), then switches the thread back to the namespace
// it had.
//
// Why this is safe for the Go runtime: a network namespace belongs to a
// thread, not to the process, so only the locked thread is ever in the
// other namespace, and no other goroutine can run on it while it is
// locked. It is unlocked (returned to the scheduler) only after the
// switch back succeeded. If the switch back fails, the goroutine exits
// still locked and the runtime ends the thread with it, so no goroutine
// ever runs on a thread left in the wrong namespace. (The one thread the
// runtime cannot end is the main thread, which it parks instead; callers
// that care keep the main goroutine locked to it, as container/runc does.)
func onLockedThread(move func() error, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: this thread's namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := move(); err != nil {
			// The thread did not move (setns and unshare either
			// succeed or change nothing).
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Exit locked: the runtime ends this thread.
			errc <- errors.Join(ferr, fmt.Errorf("netns: switching the thread back: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// inNS runs fn on a locked thread inside namespace ns (see onLockedThread).
func inNS(ns netns.NsHandle, fn func() error) error {
	return onLockedThread(func() error {
		if err := netns.Set(ns); err != nil {
			return fmt.Errorf("netns: setns: %w", err)
		}
		return nil
	}, fn)
}
