package benchmarks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/remote"
)

// File API throughput: Upload and Download (environment.FileSystem) of one
// file of a given size, through the embedded API and through the remote
// API on a loopback server (h2c, bearer token), alternating iteration by
// iteration so both see the same machine load. Each row's MBPerSec is the
// file's size over the median time (MB = 10^6 bytes).
const (
	OpFileUpload   = "file_upload"
	OpFileDownload = "file_download"
	// BaselineRemote marks the rows measured through the remote API.
	BaselineRemote = "remote"
	// FileThroughputBytes is the default file size (100 MB).
	FileThroughputBytes = 100 << 20
)

// FileThroughput measures OpFileUpload and OpFileDownload of a file of
// size bytes (FileThroughputBytes if <= 0), n times each (5 if <= 0), on h
// (a temporary localdisk host with the none runtime when nil, removed
// afterwards). Rows with baseline BaselineEmbedded are the embedded API,
// rows with BaselineRemote the remote one, rows with BaselineRaw the
// floor of plain file I/O on this machine (see rawFiles).
func FileThroughput(ctx context.Context, h *embedded.Host, size int64, n int) (_ []Result, err error) {
	if size <= 0 {
		size = FileThroughputBytes
	}
	if n <= 0 {
		n = 5
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	if h == nil {
		dir, derr := os.MkdirTemp("", "turnbox-bench-files-")
		if derr != nil {
			return nil, derr
		}
		defer os.RemoveAll(dir)
		h, err = embedded.NewHost(ctx, embedded.Config{StateDir: dir, StorageBackend: embedded.StorageBackendLocalDisk,
			ContainerRuntime: embedded.ContainerRuntimeNone, Logger: logger})
		if err != nil {
			return nil, fmt.Errorf("bench files: %w", err)
		}
		defer func() { err = errors.Join(err, h.Close(context.WithoutCancel(ctx))) }()
	}
	url, stop, err := serveLoopback(ctx, h, remoteConfig{logger: logger})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, stop()) }()
	local, err := h.CreateSession(ctx, environment.SessionConfig{})
	if err != nil {
		return nil, fmt.Errorf("bench files: %w", err)
	}
	defer func() { err = errors.Join(err, local.Destroy(context.WithoutCancel(ctx))) }()
	rem := remote.NewNativeSandboxEnvironment(remote.NewClient(url, remote.WithBearerToken(benchToken)), remote.DefaultConfig(), logger)
	if err := rem.AttachSession(local.SessionID()); err != nil {
		return nil, fmt.Errorf("bench files: %w", err)
	}
	content := make([]byte, size)
	_, _ = rand.NewChaCha8([32]byte{7}).Read(content) // incompressible
	rawDir, err := os.MkdirTemp("", "turnbox-bench-files-raw-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(rawDir)
	sides := []struct {
		baseline string
		fsys     environment.FileSystem
	}{{BaselineEmbedded, local}, {BaselineRemote, rem}, {BaselineRaw, rawFiles(rawDir)}}
	samples := map[string][]time.Duration{}
	for i := range n {
		for j := range sides {
			side := sides[(i+j)%len(sides)] // which side goes first rotates
			up, down, err := uploadDownload(ctx, side.fsys, content, fmt.Sprintf("bench-%s.bin", side.baseline))
			if err != nil {
				return nil, fmt.Errorf("bench files (%s): %w", side.baseline, err)
			}
			samples[OpFileUpload+" "+side.baseline] = append(samples[OpFileUpload+" "+side.baseline], up)
			samples[OpFileDownload+" "+side.baseline] = append(samples[OpFileDownload+" "+side.baseline], down)
		}
	}
	caps := h.Capabilities()
	var out []Result
	for _, op := range []string{OpFileUpload, OpFileDownload} {
		for _, side := range sides {
			r := Latencies(op, samples[op+" "+side.baseline])
			r.Baseline, r.Backend, r.Runtime, r.Files = side.baseline, caps.Storage, string(caps.Isolation), 1
			if r.P50MS > 0 {
				r.MBPerSec = float64(size) / 1e6 / (r.P50MS / 1e3)
			}
			out = append(out, r)
		}
	}
	return out, nil
}

// uploadDownload uploads content to p, downloads it back (checking its
// length) and returns the time each took.
func uploadDownload(ctx context.Context, fsys environment.FileSystem, content []byte, p string) (up, down time.Duration, err error) {
	start := time.Now()
	if _, err := fsys.Upload(ctx, p, bytes.NewReader(content), environment.UploadOptions{}); err != nil {
		return 0, 0, err
	}
	up = time.Since(start)
	start = time.Now()
	rc, _, err := fsys.Download(ctx, p)
	if err != nil {
		return 0, 0, err
	}
	got, err := io.Copy(io.Discard, rc)
	if cerr := rc.Close(); err == nil {
		err = cerr
	}
	down = time.Since(start)
	if err == nil && got != int64(len(content)) {
		err = fmt.Errorf("downloaded %d bytes of %d", got, len(content))
	}
	return up, down, err
}

// rawFiles is the raw baseline: Upload writes a temporary file in dir and
// renames it over the target, Download opens the file; nothing else of
// FileSystem is used.
type rawFiles string

func (d rawFiles) Upload(_ context.Context, p string, r io.Reader, _ environment.UploadOptions) (*environment.FileInfo, error) {
	f, err := os.CreateTemp(string(d), ".raw-*")
	if err != nil {
		return nil, err
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(string(d), p))
	}
	return &environment.FileInfo{}, err
}

func (d rawFiles) Download(_ context.Context, p string) (io.ReadCloser, *environment.FileInfo, error) {
	f, err := os.Open(filepath.Join(string(d), p))
	return f, &environment.FileInfo{}, err
}

func (rawFiles) Stat(context.Context, string) (*environment.FileInfo, error) { return nil, errRawOnly }
func (rawFiles) ListDir(context.Context, string, environment.ListOptions) ([]environment.FileInfo, error) {
	return nil, errRawOnly
}
func (rawFiles) MakeDir(context.Context, string, bool) error      { return errRawOnly }
func (rawFiles) Move(context.Context, string, string, bool) error { return errRawOnly }
func (rawFiles) Remove(context.Context, string, bool) error       { return errRawOnly }
func (rawFiles) WatchDir(context.Context, string, environment.WatchOptions) (environment.Watcher, error) {
	return nil, errRawOnly
}

var errRawOnly = fmt.Errorf("%w: the raw baseline only uploads and downloads", environment.ErrCapabilityNotSupported)
