package benchmarks_test

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/turnbox/turnbox/benchmarks"
)

// sampleReport is a small report of known numbers: two combinations on
// btrfs (sharing the runtime-independent storage baselines), the size
// and sessions series, and a skipped combination.
func sampleReport() benchmarks.Report {
	r := benchmarks.NewReport()
	r.Config = benchmarks.Config{Files: 1000, FileSize: 10240, N: 30, ExecN: 50}
	r.Machine.Note = "shared, loaded machine"
	res := func(op, backend, rt, baseline string, p50 float64) benchmarks.Result {
		return benchmarks.Result{Op: op, Backend: backend, Runtime: rt, Baseline: baseline, Files: 1000, N: 30, P50MS: p50, P90MS: p50 * 1.5, P99MS: p50 * 2}
	}
	r.Results = []benchmarks.Result{
		res("create", "btrfs", "gvisor", "", 150),
		res("exec", "btrfs", "gvisor", "", 2),
		res("exec", "btrfs", "gvisor", "runsc-exec", 16),
		res("exec", "btrfs", "gvisor", "runsc-run", 100),
		res("turn_complete", "btrfs", "gvisor", "", 8),
		res("turn_complete", "btrfs", "gvisor", "gvisor-checkpoint", 32),
		res("rollback", "btrfs", "gvisor", "", 10),
		res("rollback", "btrfs", "gvisor", "gvisor-restore", 130),
		res("exec", "btrfs", "none", "", 1),
		res("turn_complete", "btrfs", "none", "", 4),
		res("turn_complete", "btrfs", "", "full-copy", 40),
		res("turn_complete", "btrfs", "", "raw", 2),
	}
	for _, files := range []int{1000, 100000} {
		t := res("fork", "btrfs", "none", "", 5*float64(files)/1000)
		raw := res("fork", "btrfs", "", "raw", 1)
		t.Files, raw.Files, t.Series, raw.Series = files, files, benchmarks.SeriesFiles, benchmarks.SeriesFiles
		r.Results = append(r.Results, t, raw)
	}
	s := res("turn_complete", "btrfs", "none", "", 9)
	s.Sessions, s.Series, s.OpsPerSec, s.Files = 10, benchmarks.SeriesSessions, 123.4, 100
	r.Results = append(r.Results, s)
	r.Skipped = []benchmarks.Skip{{Backend: "zfs", Runtime: "gvisor", Reason: "runsc | cannot mount FUSE"}}
	return r
}

func TestComparisonsAndRatios(t *testing.T) {
	r := sampleReport()
	got := map[string][]string{}
	for _, c := range r.Comparisons() {
		k := c.Turnbox.Op + "/" + c.Turnbox.Runtime + "/" + c.Turnbox.Series
		for _, b := range c.Baselines {
			got[k] = append(got[k], b.Baseline)
		}
	}
	want := map[string]string{
		"exec/gvisor/":                "runsc-exec,runsc-run",
		"turn_complete/gvisor/":       "gvisor-checkpoint,full-copy,raw",
		"turn_complete/none/":         "full-copy,raw", // storage baselines serve every runtime
		"rollback/gvisor/":            "gvisor-restore",
		"exec/none/":                  "",
		"turn_complete/none/sessions": "",
	}
	for k, w := range want {
		if g := strings.Join(got[k], ","); g != w {
			t.Errorf("%s: baselines %q, want %q", k, g, w)
		}
	}
	for _, c := range r.Comparisons() {
		if c.Turnbox.Series == benchmarks.SeriesFiles && (len(c.Baselines) != 1 || c.Baselines[0].Files != c.Turnbox.Files) {
			t.Errorf("size series at %d files: baselines %+v, want the raw one at the same size", c.Turnbox.Files, c.Baselines)
		}
	}
	if v := benchmarks.Ratio(benchmarks.Result{P50MS: 2}, benchmarks.Result{P50MS: 16}); v != 8 {
		t.Errorf("Ratio 16/2 = %v, want 8", v)
	}
	if v := benchmarks.Ratio(benchmarks.Result{}, benchmarks.Result{P50MS: 16}); v != 0 {
		t.Errorf("Ratio with a missing turnbox figure = %v, want 0", v)
	}
}

// mdRows returns the table rows of md whose first cell is first, as cells.
func mdRows(md, first string) [][]string {
	var out [][]string
	for _, l := range strings.Split(md, "\n") {
		if !strings.HasPrefix(l, "|") {
			continue
		}
		cells := strings.Split(strings.Trim(l, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if cells[0] == first {
			out = append(out, cells)
		}
	}
	return out
}

func TestMarkdown(t *testing.T) {
	var buf bytes.Buffer
	if err := benchmarks.WriteMarkdown(&buf, sampleReport()); err != nil {
		t.Fatal(err)
	}
	md := buf.String()
	for _, want := range []string{
		"## btrfs × gvisor", "## btrfs × none", "## Workspace size series (btrfs × none)",
		"## Concurrent sessions (btrfs × none)", "## Not measured", "**shared, loaded machine**",
		"| exec | 2.00 | 1.00 |", // summary: gvisor then none
		`runsc \| cannot mount FUSE`,
	} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "driver") {
		t.Errorf("a report with no zfs driver mentions one:\n%s", md)
	}
	r := sampleReport()
	r.Config.ZFSDriver = "libzfs_core"
	buf.Reset()
	if err := benchmarks.WriteMarkdown(&buf, r); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "zfs through the **libzfs_core** driver") || !strings.Contains(buf.String(), "lzc_rollback_to") {
		t.Errorf("Markdown does not name the zfs driver:\n%s", buf.String())
	}
	// The exec row of btrfs × gvisor and the baseline row under it.
	sec := md[strings.Index(md, "## btrfs × gvisor"):strings.Index(md, "## btrfs × none")]
	execRows := mdRows(sec, "exec")
	if len(execRows) != 1 {
		t.Fatalf("btrfs × gvisor: %d exec rows, want 1:\n%s", len(execRows), sec)
	}
	if c := execRows[0]; c[2] != "2.00" || c[4] != "runsc-exec" || c[6] != "16.00" || c[8] != "8.0x faster" {
		t.Errorf("exec row %q: want p50 2.00, runsc-exec 16.00, turnbox 8.0x faster", c)
	}
	if !strings.Contains(sec, "| | | | | runsc-run | 30 | 100 | 200 | 50x faster") {
		t.Errorf("runsc-run row missing or wrong:\n%s", sec)
	}
	tc := mdRows(sec, "turn_complete")
	if len(tc) != 1 || tc[0][4] != "gvisor-checkpoint" || tc[0][8] != "4.0x faster" {
		t.Errorf("turn_complete rows %q", tc)
	}
	if !strings.Contains(sec, "| | | | | full-copy | 30 | 40.00 | 80.00 | 5.0x faster") || !strings.Contains(sec, "| | | | | raw | 30 | 2.00 | 4.00 | 4.0x slower") {
		t.Errorf("storage baselines missing under btrfs × gvisor's turn_complete:\n%s", sec)
	}
	sizes := mdRows(md[strings.Index(md, "## Workspace size"):], "fork")
	if len(sizes) != 2 || sizes[0][1] != "1000" || sizes[1][1] != "100000" || sizes[1][3] != "500" || sizes[1][8] != "500x slower" {
		t.Errorf("size series rows %q", sizes)
	}
	sess := mdRows(md[strings.Index(md, "## Concurrent"):], "turn_complete")
	if len(sess) != 1 || sess[0][1] != "10" || sess[0][6] != "123.4" {
		t.Errorf("sessions rows %q", sess)
	}
}

// svgDoc is what the test reads of the chart.
type svgDoc struct {
	XMLName xml.Name
	Width   string `xml:"width,attr"`
	Height  string `xml:"height,attr"`
}

func TestChart(t *testing.T) {
	var buf bytes.Buffer
	if err := benchmarks.WriteChart(&buf, sampleReport()); err != nil {
		t.Fatal(err)
	}
	// Well-formed XML throughout, an <svg> root with a size.
	dec := xml.NewDecoder(bytes.NewReader(buf.Bytes()))
	var texts []string
	var paths int
	var inText bool
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("chart is not well-formed XML: %v", err)
		}
		switch v := tok.(type) {
		case xml.StartElement:
			inText = v.Name.Local == "text"
			if v.Name.Local == "path" {
				paths++
			}
		case xml.CharData:
			if inText {
				texts = append(texts, string(v))
			}
		case xml.EndElement:
			inText = false
		}
	}
	var doc svgDoc
	if err := xml.Unmarshal(buf.Bytes(), &doc); err != nil || doc.XMLName.Local != "svg" || doc.Width == "" || doc.Height == "" {
		t.Fatalf("root %v width %q height %q: %v", doc.XMLName, doc.Width, doc.Height, err)
	}
	all := strings.Join(texts, "\n")
	for _, want := range []string{
		"btrfs × gvisor: p50 ms (log scale)", "btrfs × none: p50 ms (log scale)",
		"btrfs × none by workspace size: p50 ms (log scale)",
		"turn_complete", "fork, 100k files", "turnbox", "runsc-run", "gvisor-checkpoint",
		"2.00 turnbox", "16.00 runsc-exec", "milliseconds",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("chart has no text %q; texts:\n%s", want, all)
		}
	}
	if paths < 12 {
		t.Errorf("chart has %d paths, want a bar for each of the 12+ values", paths)
	}
	if err := benchmarks.WriteChart(io.Discard, benchmarks.NewReport()); err == nil {
		t.Error("chart of an empty report: no error")
	}
}

func TestWriteDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	r := sampleReport()
	if err := benchmarks.WriteDir(dir, r); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, benchmarks.ReportJSON))
	if err != nil {
		t.Fatal(err)
	}
	var back benchmarks.Report
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Results) != len(r.Results) || len(back.Skipped) != 1 || back.Config.Files != 1000 || back.Machine.Note != r.Machine.Note {
		t.Errorf("report.json round trip: %+v", back)
	}
	for _, name := range []string{benchmarks.ReportMD, benchmarks.ReportChart} {
		if st, err := os.Stat(filepath.Join(dir, name)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", name, err)
		}
	}
	if math.IsNaN(back.Results[0].P50MS) {
		t.Error("NaN in JSON")
	}
}

func TestReadReport(t *testing.T) {
	dir := t.TempDir()
	r := sampleReport()
	if err := benchmarks.WriteDir(dir, r); err != nil {
		t.Fatal(err)
	}
	back, err := benchmarks.ReadReport(filepath.Join(dir, benchmarks.ReportJSON))
	if err != nil {
		t.Fatal(err)
	}
	var a, b bytes.Buffer
	if err := benchmarks.WriteMarkdown(&a, r); err != nil {
		t.Fatal(err)
	}
	if err := benchmarks.WriteMarkdown(&b, back); err != nil {
		t.Fatal(err)
	}
	if a.String() != b.String() {
		t.Errorf("a report read back renders differently:\n%s\n---\n%s", a.String(), b.String())
	}
	if _, err := benchmarks.ReadReport(filepath.Join(dir, benchmarks.ReportMD)); err == nil {
		t.Error("ReadReport of Markdown: no error")
	}
}

// Ratios read in words from turnbox's side, and the JSON keeps the number
// beside the words on each turnbox figure.
func TestRatioWords(t *testing.T) {
	for v, want := range map[float64]string{2.1: "2.1x faster", 1 / 1.3: "1.3x slower", 1.02: "about the same", 0.98: "about the same",
		50: "50x faster", 0.002: "500x slower", 0: ""} {
		if got := benchmarks.RatioWords(v); got != want {
			t.Errorf("RatioWords(%v) = %q, want %q", v, got, want)
		}
	}
	rep := benchmarks.Report{Results: []benchmarks.Result{
		{Op: "exec", Backend: "btrfs", Runtime: "gvisor", N: 3, P50MS: 2},
		{Op: "exec", Backend: "btrfs", Runtime: "gvisor", N: 3, P50MS: 16, Baseline: "runsc-exec"},
	}}
	rep.SetRatios()
	data, err := json.Marshal(rep.Results)
	if err != nil {
		t.Fatal(err)
	}
	want := `"vs_baselines":[{"baseline":"runsc-exec","ratio":8,"words":"8.0x faster"}]`
	if strings.Count(string(data), "vs_baselines") != 1 || !strings.Contains(string(data), want) {
		t.Errorf("results JSON %s; want %s on the turnbox figure only", data, want)
	}
	if s := rep.Results[0].VsBaselines[0].String(); s != "8.0x faster than runsc-exec" {
		t.Errorf("VsBaseline.String() = %q", s)
	}
}
