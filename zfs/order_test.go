package zfs

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestParseRecords(t *testing.T) {
	in := strings.Join([]string{
		"p/a", "type", "filesystem",
		"p/a", "origin", "-",
		"p/a@s", "type", "snapshot",
		"p/a", "turnbox:volume", "tab\there\nnewline",
		"p/a@s", "type", "snapshot", // reached twice
		"p/b", "type", // incomplete
	}, "\x00") + "\x00"
	got := parseRecords([]byte(in))
	want := []Dataset{
		{Name: "p/a", Props: map[string]string{"type": "filesystem", "turnbox:volume": "tab\there\nnewline"}},
		{Name: "p/a@s", Props: map[string]string{"type": "snapshot"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("parseRecords:\n got %v\nwant %v", got, want)
	}
	if got := parseRecords(nil); len(got) != 0 {
		t.Fatalf("parseRecords(nil) = %v", got)
	}
}

func TestSortDatasets(t *testing.T) {
	ds := func(name, txg string) Dataset {
		return Dataset{Name: name, Props: map[string]string{"createtxg": txg}}
	}
	in := []Dataset{
		ds("p/a/g2", "30"),
		ds("p/a@late", "90"),
		ds("p/a-x", "5"),
		ds("p/a/g1@s10", "12"),
		ds("p/a/g1@s9", "11"),
		ds("p/a", "2"),
		ds("p", "1"),
		ds("p/a@early", "3"),
		ds("p/a/g1", "10"),
		ds("p@root", "4"),
	}
	sortDatasets(in)
	var got []string
	for _, d := range in {
		got = append(got, d.Name)
	}
	// As zfs lists them: "p/a-x" sorts before "p/a/..." ('-' < '/'), a
	// filesystem before its snapshots, snapshots by createtxg (s9 before
	// s10, which byte order would swap).
	want := []string{"p", "p@root", "p/a", "p/a@early", "p/a@late", "p/a-x", "p/a/g1", "p/a/g1@s9", "p/a/g1@s10", "p/a/g2"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("order:\n got %v\nwant %v", got, want)
	}
}

func TestDestroyOrder(t *testing.T) {
	ds := func(name, origin string) Dataset {
		d := Dataset{Name: name, Props: map[string]string{"type": "filesystem"}}
		if strings.Contains(name, "@") {
			d.Props["type"] = "snapshot"
		}
		if origin != "" {
			d.Props["origin"] = origin
		}
		return d
	}
	// A volume's container after rollbacks: g2 and g3 are clones of
	// earlier generations' snapshots, g4 a fork of another volume.
	all := []Dataset{
		ds("p/c", ""),
		ds("p/c/g1", ""), ds("p/c/g1@s1", ""), ds("p/c/g1@s2", ""),
		ds("p/c/g2", "p/c/g1@s1"), ds("p/c/g2@t", ""),
		ds("p/c/g3", "p/c/g2@t"),
		ds("p/c/g4", "p/other/g1@x"), ds("p/c/g4@u", ""),
	}
	got, err := destroyOrder(all)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(all) {
		t.Fatalf("destroyOrder = %q: %d names, want %d", got, len(got), len(all))
	}
	pos := map[string]int{}
	for i, n := range got {
		pos[n] = i
	}
	for _, c := range [][2]string{
		{"p/c/g1@s1", "p/c/g1"}, {"p/c/g1@s2", "p/c/g1"}, {"p/c/g2@t", "p/c/g2"}, {"p/c/g4@u", "p/c/g4"},
		{"p/c/g1", "p/c"}, {"p/c/g2", "p/c"}, {"p/c/g3", "p/c"}, {"p/c/g4", "p/c"},
		{"p/c/g2", "p/c/g1@s1"}, {"p/c/g3", "p/c/g2@t"},
	} {
		if pos[c[0]] > pos[c[1]] {
			t.Errorf("destroyOrder = %q: %s after %s", got, c[0], c[1])
		}
	}
	again, _ := destroyOrder(all)
	if !slices.Equal(got, again) {
		t.Errorf("destroyOrder is not deterministic: %q then %q", got, again)
	}

	// Two clones of each other's snapshots cannot come from ZFS; the
	// order refuses rather than loop.
	cycle := []Dataset{ds("p/c", ""), ds("p/c/a", "p/c/b@s"), ds("p/c/a@s", ""), ds("p/c/b", "p/c/a@s"), ds("p/c/b@s", "")}
	if _, err := destroyOrder(cycle); !errors.Is(err, ErrBusy) {
		t.Errorf("destroyOrder of a cycle: %v, want ErrBusy", err)
	}
}
