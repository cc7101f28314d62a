package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/remote/e2b"
)

// e2bSecretFile is the access-token secret's file in the state directory.
const e2bSecretFile = "e2b-secret"

// e2bSecretBytes is the size of a new access-token secret.
const e2bSecretBytes = 32

// e2bFlags are serve's flags of the E2B-compatible API.
type e2bFlags struct {
	enabled   bool
	keyFile   string
	domain    string
	templates []string
	keyCount  int // API keys loaded, for the banner
}

func (f *e2bFlags) register(flags *pflag.FlagSet) {
	flags.BoolVar(&f.enabled, "e2b", false, "also serve E2B's control plane and envd API on the same listener")
	flags.StringVar(&f.keyFile, "e2b-api-key-file", "", "file of accepted E2B API keys, one per line (also $TURNBOX_E2B_API_KEY)")
	flags.StringVar(&f.domain, "e2b-domain", "", "domain of sandbox host names <port>-<sandbox id>.<domain> (none: clients set E2B_SANDBOX_URL)")
	flags.StringArrayVar(&f.templates, "e2b-template", nil, "map an E2B template id to an image, NAME=IMAGE (repeatable)")
}

// server builds the E2B server for h, or returns nil when --e2b is not
// given. It refuses --e2b without an API key, and E2B flags without
// --e2b.
func (f *e2bFlags) server(h *embedded.Host, stateDir string, maxMsg int, maxDur time.Duration, log *slog.Logger) (*e2b.Server, error) {
	if !f.enabled {
		if f.keyFile != "" || f.domain != "" || len(f.templates) > 0 {
			return nil, errors.New("the --e2b-* flags need --e2b")
		}
		return nil, nil
	}
	keys, err := loadKeys("TURNBOX_E2B_API_KEY", "--e2b-api-key-file", f.keyFile)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, errors.New("--e2b needs API keys: give --e2b-api-key-file or TURNBOX_E2B_API_KEY")
	}
	f.keyCount = len(keys)
	opts := []e2b.Option{
		e2b.WithAPIKeys(keys...), e2b.WithDomain(f.domain),
		e2b.WithMaxMessageBytes(maxMsg), e2b.WithMaxRequestDuration(maxDur), e2b.WithLogger(log),
	}
	for _, t := range f.templates {
		name, image, ok := strings.Cut(t, "=")
		if !ok || name == "" || image == "" {
			return nil, fmt.Errorf("--e2b-template %q: want NAME=IMAGE", t)
		}
		opts = append(opts, e2b.WithTemplate(name, image))
	}
	secret, err := loadE2BSecret(filepath.Join(stateDir, e2bSecretFile))
	if err != nil {
		return nil, err
	}
	opts = append(opts, e2b.WithAccessTokenSecret(secret))
	return e2b.New(h, opts...)
}

// banner is what serve prints for E2B clients: the environment variables
// that point an unmodified SDK at this server.
func (f *e2bFlags) banner(baseURL string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "turnbox: E2B API enabled (%d API key(s)); point E2B clients here with:\n", f.keyCount)
	fmt.Fprintf(&b, "  E2B_API_URL=%s\n  E2B_SANDBOX_URL=%s\n", baseURL, baseURL)
	if f.domain != "" {
		fmt.Fprintf(&b, "  E2B_DOMAIN=%s\n", f.domain)
	}
	return b.String()
}

// loadE2BSecret reads the envd access-token secret at path, creating it
// (e2bSecretBytes random bytes, mode 0600) on first use. It refuses a
// file that is not a regular one, is group or world readable, or is
// short, rather than hand out tokens others could forge.
func loadE2BSecret(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err == nil {
		secret := make([]byte, e2bSecretBytes)
		if _, err := rand.Read(secret); err != nil {
			f.Close()
			return nil, err
		}
		_, werr := f.Write(secret)
		if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
			_ = os.Remove(path)
			return nil, fmt.Errorf("writing the E2B secret %s: %w", path, err)
		}
		return secret, nil
	}
	if !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("creating the E2B secret: %w", err)
	}
	f, err = os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("opening the E2B secret: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("refusing the E2B secret %s: mode %v; it must be a regular file readable by its owner only (chmod 600)", path, st.Mode())
	}
	secret, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return nil, fmt.Errorf("reading the E2B secret: %w", err)
	}
	if len(secret) < e2bSecretBytes {
		return nil, fmt.Errorf("refusing the E2B secret %s: %d bytes, want at least %d (delete it to make a new one)", path, len(secret), e2bSecretBytes)
	}
	return secret, nil
}
