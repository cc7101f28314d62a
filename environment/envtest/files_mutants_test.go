package envtest_test

import (
	"context"
	"errors"
	"fmt"
	"path"

	"github.com/turnbox/turnbox/environment"
)

// brokenFiles is an Environment whose file API methods can be overridden.
type brokenFiles struct {
	environment.Environment
	environment.FileSystem
	stat  func(ctx context.Context, p string) (*environment.FileInfo, error)
	watch func(ctx context.Context, p string, o environment.WatchOptions) (environment.Watcher, error)
}

func (b *brokenFiles) Stat(ctx context.Context, p string) (*environment.FileInfo, error) {
	if b.stat != nil {
		return b.stat(ctx, p)
	}
	return b.FileSystem.Stat(ctx, p)
}

func (b *brokenFiles) WatchDir(ctx context.Context, p string, o environment.WatchOptions) (environment.Watcher, error) {
	if b.watch != nil {
		return b.watch(ctx, p, o)
	}
	return b.FileSystem.WatchDir(ctx, p, o)
}

// filesOf wraps e (which must implement FileSystem) for the file mutants.
func filesOf(e environment.Environment) *brokenFiles {
	return &brokenFiles{Environment: e, FileSystem: e.(environment.FileSystem)}
}

// writeless is a watch that drops write events.
type writeless struct {
	environment.Watcher
	out chan environment.FileEvent
}

func (w writeless) Events() <-chan environment.FileEvent { return w.out }

func init() {
	mutants["StatFollowsSymlink"] = mutant{"Files/Stat", func(e environment.Environment) environment.Environment {
		b := filesOf(e)
		b.stat = func(ctx context.Context, p string) (*environment.FileInfo, error) {
			fi, err := b.FileSystem.Stat(ctx, p)
			if err == nil && fi.Type == environment.TypeSymlink && !path.IsAbs(fi.LinkTarget) {
				return b.FileSystem.Stat(ctx, path.Join(path.Dir(p), fi.LinkTarget))
			}
			return fi, err
		}
		return b
	}}
	mutants["EscapeAsNotFound"] = mutant{"Files/Escapes", func(e environment.Environment) environment.Environment {
		b := filesOf(e)
		b.stat = func(ctx context.Context, p string) (*environment.FileInfo, error) {
			fi, err := b.FileSystem.Stat(ctx, p)
			if errors.Is(err, environment.ErrPathEscapes) {
				return nil, fmt.Errorf("%w: %s", environment.ErrFileNotFound, p)
			}
			return fi, err
		}
		return b
	}}
	mutants["WatchDropsWrites"] = mutant{"Files/Watch", func(e environment.Environment) environment.Environment {
		b := filesOf(e)
		b.watch = func(ctx context.Context, p string, o environment.WatchOptions) (environment.Watcher, error) {
			w, err := b.FileSystem.WatchDir(ctx, p, o)
			if err != nil {
				return nil, err
			}
			out := make(chan environment.FileEvent)
			go func() {
				defer close(out)
				for ev := range w.Events() {
					if ev.Kind != environment.EventWrite {
						out <- ev
					}
				}
			}()
			return writeless{Watcher: w, out: out}, nil
		}
		return b
	}}
}
