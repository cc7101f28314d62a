package container

import (
	"errors"
	"path/filepath"
	"testing"
)

func TestCheckIsolatedSpec(t *testing.T) {
	dir := t.TempDir()
	good := Spec{ID: "s", RootFS: dir, Workspace: dir, Env: []string{"A=b", "EMPTY="}, Limits: Limits{Pids: 1}}
	if err := CheckIsolatedSpec(good); err != nil {
		t.Fatalf("a good spec: %v", err)
	}
	for name, edit := range map[string]func(*Spec){
		"relative rootfs":   func(s *Spec) { s.RootFS = "rootfs" },
		"missing workspace": func(s *Spec) { s.Workspace = filepath.Join(dir, "absent") },
		"workspace /":       func(s *Spec) { s.Workspace = "/" },
		"network":           func(s *Spec) { s.Network = "bridge" },
		"negative memory":   func(s *Spec) { s.Limits.MemoryBytes = -1 },
		"negative cpus":     func(s *Spec) { s.Limits.CPUs = -0.5 },
		"env without =":     func(s *Spec) { s.Env = []string{"A"} },
		"env without key":   func(s *Spec) { s.Env = []string{"=x"} },
	} {
		s := good
		s.Env = append([]string(nil), good.Env...)
		edit(&s)
		if err := CheckIsolatedSpec(s); !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("%s: %v, want ErrInvalidSpec", name, err)
		}
	}
}
