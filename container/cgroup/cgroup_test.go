package cgroup

import (
	"os"
	"path/filepath"
	"testing"
)

func TestDirOfSelf(t *testing.T) {
	// Every Linux process is in some memory cgroup (v1 or v2).
	dir, v2, err := Dir(os.Getpid(), "memory", "memory.current")
	if err != nil {
		t.Skipf("no memory cgroup visible here: %v", err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("Dir returned %s (v2 %v), which does not exist: %v", dir, v2, err)
	}
	if _, _, err := Dir(os.Getpid(), "no-such-controller", "no-such-file"); err == nil {
		t.Fatal("Dir found a cgroup for a controller that does not exist")
	}
	if _, _, err := Dir(-1, "memory", "memory.current"); err == nil {
		t.Fatal("Dir of pid -1 succeeded")
	}
}

func TestOOMKills(t *testing.T) {
	if got := OOMKills(""); got != -1 {
		t.Fatalf(`OOMKills("") = %d`, got)
	}
	for _, c := range []struct{ file, body string }{
		{"memory.events", "low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n"},
		{"memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"},
	} {
		d := t.TempDir()
		if err := os.WriteFile(filepath.Join(d, c.file), []byte(c.body), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := OOMKills(d); got != 2 {
			t.Errorf("%s: OOMKills = %d, want 2", c.file, got)
		}
	}
	d := t.TempDir()
	os.WriteFile(filepath.Join(d, "memory.events"), []byte("oom_kill x\n"), 0o644)
	if got := OOMKills(d); got != -1 {
		t.Errorf("garbled count: OOMKills = %d, want -1", got)
	}
	if got := OOMKills(t.TempDir()); got != -1 {
		t.Errorf("no files: OOMKills = %d, want -1", got)
	}
}
