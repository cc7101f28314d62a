//go:build !(linux && cgo)

package main

// launcherLinked is false in a build without cgo: the agent then starts
// commands itself with Go's fork+exec, which costs a few milliseconds more
// per command in gVisor.
const launcherLinked = false
