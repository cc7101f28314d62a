//go:build !(linux && cgo && libzfs_core)

package main

// lzcBuilt reports whether zfs.NewLZCDriver is compiled in (the zfs
// package's libzfs_core driver has the same build constraint).
const lzcBuilt = false
