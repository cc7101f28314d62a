package backends_test

import (
	"context"
	"strings"
	"testing"

	"github.com/turnbox/turnbox/snapshot/backends"
)

func TestOpenLocalDisk(t *testing.T) {
	ctx := context.Background()
	b, err := backends.Open(ctx, backends.LocalDisk, backends.Options{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Kind() != backends.LocalDisk {
		t.Fatalf("Kind %q, want %q", b.Kind(), backends.LocalDisk)
	}
	if _, err := b.CreateVolume(ctx, "v"); err != nil {
		t.Fatal(err)
	}
}

func TestOpenRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		o    backends.Options
		want string
	}{
		{"nosuch", backends.Options{Root: t.TempDir()}, "unknown storage backend"},
		{backends.LocalDisk, backends.Options{}, "no root"},
		{backends.ZFS, backends.Options{Root: t.TempDir()}, "parent dataset"},
	} {
		b, err := backends.Open(ctx, tc.name, tc.o)
		if err == nil {
			b.Close()
			t.Fatalf("Open(%q, %+v) succeeded", tc.name, tc.o)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q): %v, want it to say %q", tc.name, err, tc.want)
		}
	}
}
