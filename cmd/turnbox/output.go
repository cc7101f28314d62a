package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/turnbox/turnbox/environment"
)

// Output helpers shared by the session commands. Every command that
// prints something takes --json; the shapes are documented in
// docs/cli.md's "JSON output" section and pinned by the golden tests
// (testdata/golden).

// exitError ends the CLI with code and prints nothing more: the command
// already said what happened (session exec's command failed).
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// newTable returns a tabwriter for the CLI's tables.
func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

// humanSize formats a byte count in binary units ("12.3 MiB"); "-" for
// a size the backend did not report (0 or less: btrfs without quotas,
// for one, cannot tell a snapshot's size).
func humanSize(n int64) string {
	if n <= 0 {
		return "-"
	}
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v, i := float64(n)/1024, 0
	for v >= 1024 && i < len(units)-1 {
		v, i = v/1024, i+1
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}

// formatLabels is labels as k=v pairs sorted by key, comma-separated; "-"
// when there are none.
func formatLabels(labels map[string]string) string {
	if len(labels) == 0 {
		return "-"
	}
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(labels)) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + labels[k])
	}
	return b.String()
}

// parseKVs reads repeated KEY=VALUE flags into a map (nil when none).
func parseKVs(flag string, kvs []string) (map[string]string, error) {
	var m map[string]string
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%w: --%s %q: want KEY=VALUE", environment.ErrInvalidArgument, flag, kv)
		}
		if m == nil {
			m = map[string]string{}
		}
		m[k] = v
	}
	return m, nil
}

// hasLabels reports whether labels hold every pair of want.
func hasLabels(labels, want map[string]string) bool {
	for k, v := range want {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// orDash is s, or "-" when empty (a table cell that must not be blank).
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// printList prints items as a JSON array ([] when there are none) or as
// a table: header, then row(item) for each (tab-separated fields).
func printList[T any](w io.Writer, items []T, asJSON bool, header string, row func(T) string) error {
	if asJSON {
		if items == nil {
			items = []T{}
		}
		return printJSON(w, items)
	}
	tw := newTable(w)
	fmt.Fprintln(tw, header)
	for _, it := range items {
		fmt.Fprintln(tw, row(it))
	}
	return tw.Flush()
}
