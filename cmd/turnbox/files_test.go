package main

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSessionCp: a binary file goes into a session and back out whole
// with its mode, session stat and session ls SESSION PATH describe it,
// and escapes are refused.
func TestSessionCp(t *testing.T) {
	state, dir := t.TempDir(), t.TempDir()
	if out, err := runCLI(t, state, "session", "create", "--id", "cp-1"); err != nil {
		t.Fatalf("create: %v\n%s", err, out)
	}
	in := filepath.Join(dir, "in.bin")
	content := make([]byte, 3<<20)
	_, _ = rand.Read(content)
	if err := os.WriteFile(in, content, 0o640); err != nil {
		t.Fatal(err)
	}
	if out, err := runCLI(t, state, "session", "cp", in, "cp-1:data/"); err != nil {
		t.Fatalf("cp in: %v\n%s", err, out)
	}
	out, err := runCLI(t, state, "session", "stat", "cp-1", "data/in.bin")
	if err != nil || !strings.Contains(out, "file  0640") || !strings.Contains(out, "3145728") {
		t.Errorf("session stat: %v\n%s", err, out)
	}
	out, err = runCLI(t, state, "session", "ls", "cp-1", "/workspace/data")
	if err != nil || !strings.Contains(out, "/workspace/data/in.bin") {
		t.Errorf("session ls cp-1 /workspace/data: %v\n%s", err, out)
	}
	back := filepath.Join(dir, "back.bin")
	if out, err := runCLI(t, state, "session", "cp", "cp-1:data/in.bin", back); err != nil {
		t.Fatalf("cp out: %v\n%s", err, out)
	}
	got, err := os.ReadFile(back)
	if err != nil || !bytes.Equal(got, content) {
		t.Errorf("the file came back different (%d bytes, %v)", len(got), err)
	}
	if st, err := os.Stat(back); err != nil || st.Mode().Perm() != 0o640 {
		t.Errorf("the file came back with mode %v (%v), want 0640", st.Mode(), err)
	}
	for _, args := range [][]string{
		{"session", "cp", "cp-1:../../etc/passwd", filepath.Join(dir, "x")},
		{"session", "cp", in, "cp-1:/etc/x"},
		{"session", "cp", in, filepath.Join(dir, "y")},
	} {
		if out, err := runCLI(t, state, args...); err == nil {
			t.Errorf("turnbox %s succeeded, want refused:\n%s", strings.Join(args, " "), out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); err == nil {
		t.Error("a refused download created its destination")
	}
}
