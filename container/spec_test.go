package container

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestCheckIsolatedSpec(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	good := Spec{ID: "s", RootFS: dir, Workspace: dir, Env: []string{"A=b", "EMPTY="}, Limits: Limits{Pids: 1}}
	if err := CheckIsolatedSpec(good); err != nil {
		t.Fatalf("a good spec: %v", err)
	}
	for name, edit := range map[string]func(*Spec){
		"relative rootfs":    func(s *Spec) { s.RootFS = "rootfs" },
		"missing workspace":  func(s *Spec) { s.Workspace = filepath.Join(dir, "absent") },
		"workspace /":        func(s *Spec) { s.Workspace = "/" },
		"network":            func(s *Spec) { s.Network = "bridge" },
		"netns without path": func(s *Spec) { s.Network = NetworkNamespace },
		"netns not nsfs":     func(s *Spec) { s.Network, s.NetNS = NetworkNamespace, filepath.Join(dir, "f") },
		"netns relative":     func(s *Spec) { s.Network, s.NetNS = NetworkNamespace, "proc/self/ns/net" },
		"netns symlink":      func(s *Spec) { s.Network, s.NetNS = NetworkNamespace, "/proc/self/ns/net" },
		"netns dir":          func(s *Spec) { s.Network, s.NetNS = NetworkNamespace, dir },
		"path without netns": func(s *Spec) { s.NetNS = filepath.Join(dir, "f") },
		"negative memory":    func(s *Spec) { s.Limits.MemoryBytes = -1 },
		"negative cpus":      func(s *Spec) { s.Limits.CPUs = -0.5 },
		"env without =":      func(s *Spec) { s.Env = []string{"A"} },
		"env without key":    func(s *Spec) { s.Env = []string{"=x"} },
	} {
		s := good
		s.Env = append([]string(nil), good.Env...)
		edit(&s)
		if err := CheckIsolatedSpec(s); !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("%s: %v, want ErrInvalidSpec", name, err)
		}
	}
}
