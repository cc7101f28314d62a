package main

import (
	"bytes"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestE2BSecretMadeOnceAndChecked(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, e2bSecretFile)
	first, err := loadE2BSecret(p)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o600 || len(first) != e2bSecretBytes {
		t.Fatalf("secret file %v (%v), %d bytes", st.Mode(), err, len(first))
	}
	again, err := loadE2BSecret(p)
	if err != nil || !bytes.Equal(first, again) {
		t.Fatalf("second load: %v, same secret %v", err, bytes.Equal(first, again))
	}
	if err := os.Chmod(p, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := loadE2BSecret(p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("group-readable secret: err = %v", err)
	}
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("tiny"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadE2BSecret(short); err == nil {
		t.Fatal("a short secret was accepted")
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(short, link); err != nil {
		t.Fatal(err)
	}
	if _, err := loadE2BSecret(link); err == nil {
		t.Fatal("a symlinked secret was followed")
	}
}

func TestE2BFlagsRefuseBadSetups(t *testing.T) {
	for _, c := range []struct {
		name, key string
		f         e2bFlags
	}{
		{"no key", "", e2bFlags{enabled: true}},
		{"flags, no --e2b", "e2b_00", e2bFlags{domain: "example.com"}},
		{"bad template", "e2b_00", e2bFlags{enabled: true, templates: []string{"noequals"}}},
		{"empty image", "e2b_00", e2bFlags{enabled: true, templates: []string{"x="}}},
	} {
		t.Setenv("TURNBOX_E2B_API_KEY", c.key)
		dir := t.TempDir()
		if _, err := c.f.server(nil, dir, 0, 0, nil); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
		if _, err := os.Stat(filepath.Join(dir, e2bSecretFile)); err == nil {
			t.Errorf("%s: refused, but made the secret file", c.name)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a process's output and a poller.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestServeE2B: `turnbox serve --e2b` prints the client's environment
// and serves E2B's control plane next to turnbox's API; without a key it
// refuses to start.
func TestServeE2B(t *testing.T) {
	state := t.TempDir()
	if out, err := runCLI(t, state, "serve", "--listen", "127.0.0.1:0", "--e2b"); err == nil || !strings.Contains(out, "needs API keys") {
		t.Fatalf("serve --e2b without keys: %v\n%s", err, out)
	}
	keyFile := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(keyFile, []byte("# keys\ne2b_abc123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(os.Args[0], "--state-dir", state, "--runtime", "none", "--log-level", "error",
		"serve", "--listen", addr, "--e2b", "--e2b-api-key-file", keyFile, "--e2b-domain", "sb.example")
	cmd.Env = append(os.Environ(), runMainEnv+"=1")
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	url := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "E2B_DOMAIN=sb.example") {
		if time.Now().After(deadline) {
			t.Fatalf("no E2B banner:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, want := range []string{"E2B_API_URL=" + url, "E2B_SANDBOX_URL=" + url} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("banner lacks %s:\n%s", want, out.String())
		}
	}
	req, _ := http.NewRequest("POST", url+"/v2/sandboxes", strings.NewReader(`{"templateID":"base"}`))
	req.Header.Set("X-API-KEY", "e2b_abc123")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create through serve --e2b: %d", resp.StatusCode)
	}
	resp, err = http.Get(url + "/healthz") // turnbox's own API is still there
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz: %d", resp.StatusCode)
	}
	if st, err := os.Stat(filepath.Join(state, e2bSecretFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("secret file: %v, %v", st, err)
	}
}
