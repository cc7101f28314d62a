//go:build !linux

package guard

import (
	"errors"
	"os"
)

// ErrNotSealable reports a directory that cannot be made immutable: on
// this platform, every directory.
var ErrNotSealable = errors.New("guard: cannot make the directory immutable")

// ErrTampered reports that an entry only the host may change is not what
// the host put there. snapshot.ErrTampered is the same error.
var ErrTampered = errors.New("volume tampered with")

// Seal fails: only Linux can seal a directory.
func Seal(string) error { return ErrNotSealable }

// Unseal does nothing.
func Unseal(string) error { return nil }

// Unsealed runs fn.
func Unsealed(_ string, fn func() error) error { return fn() }

// Sealed reports false.
func Sealed(string) (bool, error) { return false, nil }

// SealSupported fails: only Linux can seal a directory.
func SealSupported(string) error { return ErrNotSealable }

// ID identifies a directory: its device and inode.
type ID struct{ Dev, Ino uint64 }

// OpenDir is not supported here.
func OpenDir(string, string) (*os.File, error) { return nil, ErrNotSealable }

// OpenDirFD is not supported here.
func OpenDirFD(string, string) (int, error) { return -1, ErrNotSealable }

// IDOf is not supported here.
func IDOf(*os.File) (ID, error) { return ID{}, ErrNotSealable }

// Same is not supported here.
func Same(string, string, ID) error { return ErrNotSealable }
