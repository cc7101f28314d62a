package rootfs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestMetaRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadMeta(dir, "x"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ReadMeta of an image without a record: %v, want ErrNotExist", err)
	}
	m := Meta{Name: "x", Source: "pull:example.test/x:1", Digest: "sha256:00", Created: time.Unix(1, 0).UTC(), SizeBytes: 42,
		Config: ImageConfig{Env: []string{"A=1"}, WorkingDir: "/app", User: "1000:1000", Cmd: []string{"sh"}}}
	if err := WriteMeta(dir, m); err != nil {
		t.Fatal(err)
	}
	got, err := ReadMeta(dir, "x")
	if err != nil || !reflect.DeepEqual(got, m) {
		t.Fatalf("ReadMeta = %+v, %v; want %+v", got, err, m)
	}
	m.SizeBytes = 43
	if err := WriteMeta(dir, m); err != nil {
		t.Fatal(err)
	}
	if got, _ := ReadMeta(dir, "x"); got.SizeBytes != 43 {
		t.Fatalf("a rewritten record reads %+v", got)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, MetaDir))
	if len(ents) != 1 {
		t.Fatalf("meta dir holds %d entries, want 1 (no temporary left)", len(ents))
	}
	if err := os.WriteFile(filepath.Join(dir, MetaDir, "big.json"), []byte(strings.Repeat(" ", maxMetaBytes+1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadMeta(dir, "big"); err == nil {
		t.Fatal("an oversized record was read")
	}
	if err := RemoveMeta(dir, "x"); err != nil {
		t.Fatal(err)
	}
	if err := RemoveMeta(dir, "x"); err != nil {
		t.Fatalf("removing a missing record: %v", err)
	}
	if err := WriteMeta(dir, Meta{}); err == nil {
		t.Fatal("a record without a name was written")
	}
}
