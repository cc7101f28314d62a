package zfs

import (
	"reflect"
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
