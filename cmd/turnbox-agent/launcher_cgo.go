//go:build linux && cgo

package main

// The launcher (launcher.c) is linked in: its constructor takes over the
// process before the Go runtime starts when TURNBOX_LAUNCHER_FD is set.

import "C"

// launcherLinked reports whether this binary can serve as the agent's
// launcher (built with cgo).
const launcherLinked = true
