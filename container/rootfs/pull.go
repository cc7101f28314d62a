package rootfs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// PullOptions configures Pull.
type PullOptions struct {
	// Platform chooses the image of a multi-platform reference, as
	// "os/arch[/variant]". Empty means this host's, "linux/" + GOARCH.
	Platform string
	// Keychain supplies registry credentials; nil means
	// authn.DefaultKeychain (the docker config and its credential
	// helpers).
	Keychain authn.Keychain
	// Progress, if not nil, is called as the layers are downloaded, with
	// the compressed bytes read so far and the total, as for Import.
	Progress func(done, total int64)
	// Insecure allows plain http to a registry on a loopback address
	// (localhost, 127.0.0.0/8, ::1), as a test or local registry is; it
	// is refused for any other registry. (go-containerregistry already
	// falls back to http for localhost, 127.0.0.1 and ::1 after trying
	// https; it would also for names ending in .localhost and RFC 1918
	// addresses, open to a downgrade by anyone on the path, which Pull
	// refuses.)
	Insecure bool
}

// ErrBadReference reports a reference Pull cannot use: malformed, or
// Insecure for a registry off the loopback.
var ErrBadReference = errors.New("rootfs: bad image reference")

// Pull makes dst, a new directory usable as a sandbox's root filesystem,
// from the image ref ("debian:12", "ghcr.io/org/img@sha256:...") in an
// OCI or Docker v2 registry. A multi-platform reference is resolved for
// opts.Platform. Each layer blob is verified against its digest as it is
// read, and the layers are flattened and written as Import does: safely,
// into a temporary directory renamed into place, so that a failed pull
// (a tampered blob, a lost connection) leaves nothing. dst must not
// exist (ErrImageExists). The result carries the manifest's digest and
// the image's configuration.
func Pull(ctx context.Context, ref, dst string, opts PullOptions) (*ImportResult, error) {
	if _, err := os.Lstat(dst); err == nil {
		return nil, fmt.Errorf("%w: %s", ErrImageExists, dst)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("rootfs: pull: %w", err)
	}
	want := &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	if opts.Platform != "" {
		p, err := v1.ParsePlatform(opts.Platform)
		if err != nil || p.OS == "" || p.Architecture == "" {
			return nil, fmt.Errorf("%w: platform %q: want os/arch[/variant], e.g. linux/amd64", ErrBadReference, opts.Platform)
		}
		want = p
	}
	r, err := parseRef(ref, opts.Insecure)
	if err != nil {
		return nil, err
	}
	kc := opts.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	img, err := remote.Image(r, remote.WithContext(ctx), remote.WithAuthFromKeychain(kc), remote.WithPlatform(*want))
	if err != nil {
		return nil, fmt.Errorf("rootfs: pull %s: %w", ref, err)
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("rootfs: pull %s: reading the manifest: %w", ref, err)
	}
	ctr := &counter{}
	var total int64
	for _, l := range m.Layers {
		total += l.Size
	}
	ctr.total.Store(total)
	res, err := writeImage(ctx, &countedImage{Image: img, ctr: ctr}, dst, want, ctr, opts.Progress)
	if err != nil {
		return nil, fmt.Errorf("rootfs: pull %s: %w", ref, err)
	}
	return res, nil
}

// parseRef parses ref, strictly (no guessing of a missing registry beyond
// Docker Hub's default), allowing http only to a loopback registry.
func parseRef(ref string, insecure bool) (name.Reference, error) {
	var nopts []name.Option
	if insecure {
		nopts = append(nopts, name.Insecure)
	}
	r, err := name.ParseReference(ref, nopts...)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrBadReference, ref, err)
	}
	if reg := r.Context().Registry; reg.Scheme() == "http" && !isLoopback(reg.RegistryStr()) {
		return nil, fmt.Errorf("%w: plain http is allowed only to a registry on loopback, not %s", ErrBadReference, reg.RegistryStr())
	}
	return r, nil
}

// isLoopback reports whether host[:port] names a loopback address.
func isLoopback(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// RepositoryBase is the last path element of ref's repository
// ("ghcr.io/org/python:3.12" gives "python"), the default name of a
// pulled image; "" if ref does not parse.
func RepositoryBase(ref string) string {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return ""
	}
	repo := r.Context().RepositoryStr()
	return repo[strings.LastIndex(repo, "/")+1:]
}
