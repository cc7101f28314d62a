package zfs

import (
	"errors"
	"strings"
	"testing"

	"github.com/turnbox/turnbox/snapshot"
)

func TestValidateDataset(t *testing.T) {
	ok := []string{"tank", "tank/a", "tank/a/b-c_d.e:f", "t0/x", strings.Repeat("a", MaxNameLength)}
	bad := []string{"", "/tank", "tank/", "tank//a", "tank/a@b", "tank/a#b", "tank/./a", "tank/..", "0tank/a",
		"tank/-a", "tank/a b", "tank/a%b", "tank/é", strings.Repeat("a", MaxNameLength+1),
		"t" + strings.Repeat("/a", MaxNestingDepth)}
	for _, n := range ok {
		if err := ValidateDataset(n); err != nil {
			t.Errorf("ValidateDataset(%q) = %v, want nil", n, err)
		}
	}
	for _, n := range bad {
		err := ValidateDataset(n)
		if !errors.Is(err, ErrInvalidName) || !errors.Is(err, snapshot.ErrInvalidName) {
			t.Errorf("ValidateDataset(%.60q) = %v, want ErrInvalidName", n, err)
		}
	}
}

func TestValidateSnapshot(t *testing.T) {
	ok := []string{"tank@s", "tank/a@s-1_2.3:4", "tank/a@_x1"}
	bad := []string{"tank", "tank@", "@s", "tank/a@b@c", "tank/a@b/c", "tank/a@-r", "tank/a@b c",
		"tank/a@" + strings.Repeat("s", MaxNameLength), "tank/a b@s"}
	for _, n := range ok {
		if err := ValidateSnapshot(n); err != nil {
			t.Errorf("ValidateSnapshot(%q) = %v, want nil", n, err)
		}
	}
	for _, n := range bad {
		if err := ValidateSnapshot(n); !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidateSnapshot(%.60q) = %v, want ErrInvalidName", n, err)
		}
	}
	if err := ValidateName("tank/a@s"); err != nil {
		t.Error(err)
	}
	if err := ValidateName("tank/a@"); err == nil {
		t.Error("ValidateName accepted an empty snapshot name")
	}
}

func TestValidatePropertyName(t *testing.T) {
	for _, p := range []string{"turnbox:volume", "com.example:a-b_c.d"} {
		if err := ValidatePropertyName(p); err != nil {
			t.Errorf("%q: %v", p, err)
		}
	}
	for _, p := range []string{"", "novolume", "Turnbox:x", "a:b c", strings.Repeat("a:", 200)} {
		if err := ValidatePropertyName(p); !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidatePropertyName(%.40q) = %v, want ErrInvalidName", p, err)
		}
	}
}

func TestParseGet(t *testing.T) {
	out := "tank\ttype\tfilesystem\n" +
		"tank\tused\t12345\n" +
		"tank\torigin\t-\n" +
		"tank/a@s\ttype\tsnapshot\n" +
		"tank/a@s\tturnbox:snapshot\tname\twith\ttabs\n" +
		"tank/a@s\tcreation\t1795879862\n"
	ds, err := ParseGet([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 || ds[0].Name != "tank" || ds[1].Name != "tank/a@s" {
		t.Fatalf("ParseGet = %+v", ds)
	}
	if ds[0].Int("used") != 12345 || ds[0].Type() != "filesystem" {
		t.Errorf("tank: %+v", ds[0])
	}
	if _, ok := ds[0].Props["origin"]; ok {
		t.Errorf("unset origin ('-') was kept")
	}
	if got := ds[1].Props["turnbox:snapshot"]; got != "name\twith\ttabs" {
		t.Errorf("value with tabs = %q", got)
	}
	if ds[1].Created().Unix() != 1795879862 {
		t.Errorf("Created = %v", ds[1].Created())
	}
	if _, err := ParseGet([]byte("garbage line\n")); err == nil {
		t.Error("ParseGet accepted a malformed line")
	}
}

func TestParseHolds(t *testing.T) {
	got := ParseHolds([]byte("tank/a@s\tkeep\tSat Nov 28 15:31 2026\ntank/a@s\tturnbox\t1795879862\n"))
	if strings.Join(got, ",") != "keep,turnbox" {
		t.Errorf("ParseHolds = %q", got)
	}
}

func TestClassify(t *testing.T) {
	cases := map[string]error{
		"cannot open 'tank/x': dataset does not exist":                                           ErrNotFound,
		"cannot create snapshot 'tank/a@s': dataset already exists":                              ErrExists,
		"cannot create 'tank/a': out of space":                                                   ErrNoSpace,
		"cannot destroy 'tank/a@s': snapshot has dependent clones\nuse '-R' to destroy":          ErrBusy,
		"cannot destroy 'tank/a': dataset is busy":                                               ErrBusy,
		"cannot rollback to 'tank/a@s': more recent snapshots exist\nuse '-r' to force deletion": ErrNotNewest,
		"cannot snapshot 'tank/a@b%d': invalid character % in name":                              ErrInvalidName,
		"cannot create 'tank/bad@x': snapshot delimiter '@' in filesystem name":                  ErrInvalidName,
		"internal error: /usr/lib/zfs/pyzfs.py not found":                                        ErrUnsupported,
		"invalid option 'p'\nusage:":                                                             ErrUnsupported,
	}
	for msg, want := range cases {
		if got := classify(msg); !errors.Is(got, want) {
			t.Errorf("classify(%q) = %v, want %v", msg, got, want)
		}
	}
	if classify("something else entirely") != nil {
		t.Error("classify mapped an unknown message")
	}
	if !errors.Is(ErrNotNewest, snapshot.ErrBusy) {
		t.Error("ErrNotNewest does not wrap ErrBusy")
	}
	e := &CommandError{Args: []string{"zfs", "destroy", "x"}, Stderr: "boom", ExitCode: 1, Err: ErrBusy}
	if !errors.Is(e, snapshot.ErrBusy) || !strings.Contains(e.Error(), "zfs destroy x: boom (exit 1)") {
		t.Errorf("CommandError: %v", e)
	}
}

func TestHashedNames(t *testing.T) {
	long := strings.Repeat("v", snapshot.MaxNameLength)
	c := volComponent(long)
	if len(c) > maxVerbatim || !strings.HasPrefix(c, hashedPrefix) || ValidateComponent(c) != nil {
		t.Errorf("volComponent(long) = %q", c)
	}
	if volComponent("short") != "short" {
		t.Error("short names must stay verbatim")
	}
	if volComponent(long) != c || volComponent(long+"x"[:0]) != c {
		t.Error("volComponent is not deterministic")
	}
	h := hiddenName()
	if !strings.HasPrefix(h, hiddenPrefix) || ValidateComponent(h) != nil || h == hiddenName() {
		t.Errorf("hiddenName = %q", h)
	}
}
