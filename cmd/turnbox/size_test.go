package main

import (
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"": 0, "0": 0, "4096": 4096, "512K": 512 << 10, "10M": 10 << 20, "2g": 2 << 30, "1T": 1 << 40} {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"x", "-1", "1.5G", "G", "10MB", "99999999999T"} {
		if got, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", bad, got)
		}
	}
}

func TestCheckZFSDriver(t *testing.T) {
	if err := checkZFSDriver("command"); err != nil {
		t.Errorf("command: %v", err)
	}
	if err := checkZFSDriver("lzc"); err == nil || !strings.Contains(err.Error(), "unknown driver") {
		t.Errorf("lzc: %v, want an unknown-driver error", err)
	}
	err := checkZFSDriver("libzfs_core")
	if lzcBuilt != (err == nil) {
		t.Errorf("libzfs_core in a build with lzcBuilt=%v: %v", lzcBuilt, err)
	}
	if err != nil && !strings.Contains(err.Error(), "-tags libzfs_core") {
		t.Errorf("libzfs_core without the driver: %v, want how to build it", err)
	}
}
