package runc

import (
	"os"

	"github.com/opencontainers/runc/libcontainer"
	// nsenter's cgo constructor does the namespace setup of a container's
	// init before the Go runtime starts; it is a no-op in any other process.
	_ "github.com/opencontainers/runc/libcontainer/nsenter"
)

// Init turns this process into a container's init when libcontainer
// re-executed it for that purpose, and returns at once otherwise.
//
// libcontainer starts every container by re-executing the current binary
// (/proc/self/exe) with the single argument "init"; that child sets up the
// container from inside (mounts, pivot_root, capabilities, seccomp) and then
// execs the container's first process (the turnbox agent). So every binary
// that starts sandboxes with this package must call Init as the first
// statement of main, and every test binary of a package that does so must
// call it first thing in TestMain:
//
//	func main() {
//		runc.Init()
//		...
//	}
//
//	func TestMain(m *testing.M) {
//		runc.Init()
//		os.Exit(m.Run())
//	}
//
// Importing this package locks the main goroutine to the main thread
// (runtime.LockOSThread in an init function), so that libcontainer's
// namespace-joining helper goroutines never run there (see hostns.go);
// main must not undo it with runtime.UnlockOSThread. Other goroutines are
// not affected. New and Start refuse to go on if the main thread has left
// the namespaces it started in.
//
// When this process is such an init, Init never returns. The check is on
// both os.Args[1] == "init" and libcontainer's private environment, so a
// program's own "init" subcommand is not affected.
func Init() {
	if !isInit() {
		initCalled.Store(true)
		return
	}
	libcontainer.Init() // does not return
}

func isInit() bool {
	return len(os.Args) > 1 && os.Args[1] == "init" && os.Getenv("_LIBCONTAINER_INITPIPE") != ""
}
