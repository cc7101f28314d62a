package benchmarks

import (
	"encoding/json"
	"errors"
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"

	"github.com/turnbox/turnbox/zfs"
)

// The files WriteDir writes.
const (
	ReportJSON  = "report.json"
	ReportMD    = "report.md"
	ReportChart = "chart.svg"
)

// WriteDir writes r into dir (made if missing) as ReportJSON (the Report),
// ReportMD (Markdown tables with ratios to the baselines) and ReportChart
// (an SVG bar chart of the medians).
func WriteDir(dir string, r Report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("benchmarks: %w", err)
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("benchmarks: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ReportJSON), append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("benchmarks: %w", err)
	}
	write := func(name string, fn func(io.Writer, Report) error) error {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("benchmarks: %w", err)
		}
		if err := fn(f, r); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("benchmarks: %w", err)
		}
		return nil
	}
	if err := write(ReportMD, WriteMarkdown); err != nil {
		return err
	}
	return write(ReportChart, WriteChart)
}

// ReadReport reads a report.json that WriteDir (or `turnbox bench --json`)
// wrote.
func ReadReport(path string) (Report, error) {
	var r Report
	data, err := os.ReadFile(path)
	if err != nil {
		return r, fmt.Errorf("benchmarks: %w", err)
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("benchmarks: %s: %w", path, err)
	}
	r.SetRatios()
	return r, nil
}

// Comparison is one turnbox figure with the baselines measured beside it
// in the same run.
type Comparison struct {
	Turnbox   Result
	Baselines []Result
}

// Ratio is how many times longer the baseline's median took than
// turnbox's (above 1: turnbox is faster); 0 when either is missing.
func Ratio(turnbox, baseline Result) float64 {
	if turnbox.P50MS <= 0 || baseline.P50MS <= 0 {
		return 0
	}
	return baseline.P50MS / turnbox.P50MS
}

// matches reports whether baseline b is measured beside turnbox figure t:
// the same op, backend, workspace, series and concurrency, and the same
// runtime unless b does not depend on it (Runtime "").
func matches(t, b Result) bool {
	return b.Baseline != "" && b.Op == t.Op && b.Backend == t.Backend && b.Files == t.Files &&
		b.Series == t.Series && b.Sessions == t.Sessions && (b.Runtime == "" || b.Runtime == t.Runtime)
}

// Comparisons returns turnbox's figures in report order, each with its
// baselines. A baseline with no turnbox figure beside it (its op failed)
// gets a Comparison with a zero Turnbox.
func (r Report) Comparisons() []Comparison {
	var out []Comparison
	used := make([]bool, len(r.Results))
	for _, t := range r.Results {
		if t.Baseline != "" {
			continue
		}
		c := Comparison{Turnbox: t}
		for j, b := range r.Results {
			if matches(t, b) {
				c.Baselines = append(c.Baselines, b)
				used[j] = true
			}
		}
		out = append(out, c)
	}
	for j, b := range r.Results {
		if b.Baseline != "" && !used[j] {
			out = append(out, Comparison{Turnbox: Result{Op: b.Op, Backend: b.Backend, Runtime: b.Runtime, Files: b.Files, Series: b.Series}, Baselines: []Result{b}})
		}
	}
	return out
}

// combos returns the backend × runtime pairs of the matrix in report order.
func (r Report) combos() [][2]string {
	var out [][2]string
	for _, res := range r.Results {
		if res.Series != "" || res.Baseline != "" {
			continue
		}
		k := [2]string{res.Backend, res.Runtime}
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

func ms(v float64) string {
	switch {
	case v <= 0:
		return "–"
	case v < 1:
		return fmt.Sprintf("%.3f", v)
	case v < 100:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

func ratio(v float64) string {
	if v <= 0 {
		return "–"
	}
	return RatioWords(v)
}

// RatioWords says a Ratio in words from turnbox's side: 2.1 is "2.1x
// faster", 0.77 "1.3x slower" (the baseline took 1/1.3 as long), a ratio
// that rounds to 1.0 either way "about the same"; "" for a missing one (0).
func RatioWords(v float64) string {
	if v <= 0 {
		return ""
	}
	f, word := v, "faster"
	if v < 1 {
		f, word = 1/v, "slower"
	}
	n := fmt.Sprintf("%.1f", f)
	if f >= 10 {
		n = fmt.Sprintf("%.0f", f)
	}
	if n == "1.0" {
		return "about the same"
	}
	return n + "x " + word
}

// VsBaseline is a turnbox figure's ratio to one baseline measured beside
// it: Ratio's number and RatioWords' words.
type VsBaseline struct {
	Baseline string  `json:"baseline"`
	Ratio    float64 `json:"ratio"`
	Words    string  `json:"words"`
}

// String says v in a sentence's words: "2.1x faster than full-copy",
// "about as fast as raw".
func (v VsBaseline) String() string {
	if v.Words == "about the same" {
		return "about as fast as " + v.Baseline
	}
	return v.Words + " than " + v.Baseline
}

// SetRatios fills each turnbox figure's VsBaselines from the baselines
// measured beside it (Comparisons); a report read from an older run gets
// them too.
func (r *Report) SetRatios() {
	for i, t := range r.Results {
		if t.Baseline != "" {
			continue
		}
		r.Results[i].VsBaselines = nil
		for _, b := range r.Results {
			if v := Ratio(t, b); matches(t, b) && v > 0 {
				r.Results[i].VsBaselines = append(r.Results[i].VsBaselines, VsBaseline{Baseline: b.Baseline, Ratio: v, Words: RatioWords(v)})
			}
		}
	}
}

func opOrder(op string) int {
	if i := slices.Index(Ops, op); i >= 0 {
		return i
	}
	return len(Ops)
}

// WriteMarkdown writes r as Markdown: the machine, a summary of medians per
// backend × runtime, one table per combination with each op's baselines
// and ratios, the scaling series, and what was not measured.
func WriteMarkdown(w io.Writer, r Report) error {
	var b strings.Builder
	writeMDHeader(&b, r)
	combos := r.combos()
	comps := r.Comparisons()
	if len(combos) > 0 {
		writeMDMedians(&b, r.Results, combos)
		writeMDCombos(&b, comps, combos)
	}
	var sizes, sessions []Comparison
	for _, cmp := range comps {
		switch cmp.Turnbox.Series {
		case SeriesFiles:
			sizes = append(sizes, cmp)
		case SeriesSessions:
			sessions = append(sessions, cmp)
		}
	}
	writeMDSizeSeries(&b, sizes, r.Series.FileSize)
	writeMDSessionsSeries(&b, sessions)
	writeMDSkipped(&b, r.Skipped)
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("benchmarks: writing Markdown: %w", err)
	}
	return nil
}

// writeMDHeader writes the title, the machine and how to read the tables.
func writeMDHeader(b *strings.Builder, r Report) {
	m := r.Machine
	b.WriteString("# turnbox benchmarks\n\n")
	fmt.Fprintf(b, "Measured %s on %s/%s, %d CPUs", m.When.Format("2006-01-02 15:04 MST"), m.OS, m.Arch, m.CPUs)
	if m.CPUModel != "" {
		fmt.Fprintf(b, " (%s)", m.CPUModel)
	}
	if m.MemoryBytes > 0 {
		fmt.Fprintf(b, ", %.0f GiB RAM", float64(m.MemoryBytes)/(1<<30))
	}
	fmt.Fprintf(b, ", Linux %s; load average %.2f %.2f %.2f at the start.", m.Kernel, m.LoadAvg[0], m.LoadAvg[1], m.LoadAvg[2])
	if m.Note != "" {
		fmt.Fprintf(b, " **%s**", m.Note)
	}
	c := r.Config
	fmt.Fprintf(b, "\n\nTimes in milliseconds: p50 (median) and p99 of n runs. Matrix workspace: %d files of %d bytes. "+
		"The turnbox column compares p50s from this run: \"2.1x faster\" means the baseline took 2.1 times as long as turnbox, \"1.3x slower\" that turnbox took 1.3 times as long as the baseline. "+
		"Storage baselines (full-copy, raw) do not depend on the runtime and are measured once per backend.", c.Files, c.FileSize)
	if c.ZFSDriver != "" {
		fmt.Fprintf(b, " zfs through the **%s** driver; its raw baseline is that driver's bare calls (%s).", c.ZFSDriver, zfsRawWhat(c.ZFSDriver))
	}
	b.WriteString("\n")
}

// writeMDMedians writes the summary table: each op's p50 per combination,
// leaving out ops measured on none of them.
func writeMDMedians(b *strings.Builder, results []Result, combos [][2]string) {
	b.WriteString("\n## Medians per backend × runtime (p50 ms)\n\n| op |")
	for _, k := range combos {
		fmt.Fprintf(b, " %s × %s |", k[0], k[1])
	}
	b.WriteString("\n|---|" + strings.Repeat("---:|", len(combos)) + "\n")
	ops := slices.Clone(Ops)
	for _, res := range results {
		if res.Series == "" && res.Baseline == "" && !slices.Contains(ops, res.Op) {
			ops = append(ops, res.Op) // ops added by other measurements
		}
	}
	for _, op := range ops {
		row := "| " + op + " |"
		found := false
		for _, k := range combos {
			v := "–"
			for _, res := range results {
				if res.Series == "" && res.Baseline == "" && res.Op == op && res.Backend == k[0] && res.Runtime == k[1] {
					v, found = ms(res.P50MS), true
				}
			}
			row += " " + v + " |"
		}
		if found {
			b.WriteString(row + "\n")
		}
	}
}

// writeMDCombos writes one table per combination: its ops in Ops order,
// each beside its baselines and their ratios.
func writeMDCombos(b *strings.Builder, comps []Comparison, combos [][2]string) {
	for _, k := range combos {
		fmt.Fprintf(b, "\n## %s × %s\n\n", k[0], k[1])
		b.WriteString("| op | n | p50 | p99 | baseline | baseline n | baseline p50 | baseline p99 | turnbox |\n")
		b.WriteString("|---|---:|---:|---:|---|---:|---:|---:|---:|\n")
		var rows []Comparison
		for _, cmp := range comps {
			t := cmp.Turnbox
			if t.Series == "" && t.Backend == k[0] && t.Runtime == k[1] {
				rows = append(rows, cmp)
			}
		}
		slices.SortStableFunc(rows, func(a, b Comparison) int { return opOrder(a.Turnbox.Op) - opOrder(b.Turnbox.Op) })
		for _, cmp := range rows {
			writeComparison(b, cmp)
		}
	}
}

// writeMDSizeSeries writes the workspace size series, if measured; it
// sorts sizes in place.
func writeMDSizeSeries(b *strings.Builder, sizes []Comparison, fileSize int) {
	if len(sizes) == 0 {
		return
	}
	t := sizes[0].Turnbox
	fmt.Fprintf(b, "\n## Workspace size series (%s × %s)\n\n", t.Backend, t.Runtime)
	if fileSize > 0 {
		fmt.Fprintf(b, "Workspaces of files of %d bytes, 100 to a directory; the raw baseline on a tree of the same size.\n\n", fileSize)
	}
	b.WriteString("| op | files | n | p50 | p99 | baseline | baseline p50 | baseline p99 | turnbox |\n")
	b.WriteString("|---|---:|---:|---:|---:|---|---:|---:|---:|\n")
	slices.SortStableFunc(sizes, func(a, b Comparison) int { return opOrder(a.Turnbox.Op) - opOrder(b.Turnbox.Op) })
	for _, cmp := range sizes {
		t := cmp.Turnbox
		if len(cmp.Baselines) == 0 {
			fmt.Fprintf(b, "| %s | %d | %d | %s | %s | | | | |\n", t.Op, t.Files, t.N, ms(t.P50MS), ms(t.P99MS))
		}
		for _, bl := range cmp.Baselines {
			fmt.Fprintf(b, "| %s | %d | %d | %s | %s | %s | %s | %s | %s |\n", t.Op, t.Files, t.N, ms(t.P50MS), ms(t.P99MS),
				bl.Baseline, ms(bl.P50MS), ms(bl.P99MS), ratio(Ratio(t, bl)))
		}
	}
}

// writeMDSessionsSeries writes the concurrent sessions series, if measured.
func writeMDSessionsSeries(b *strings.Builder, sessions []Comparison) {
	if len(sessions) == 0 {
		return
	}
	t := sessions[0].Turnbox
	fmt.Fprintf(b, "\n## Concurrent sessions (%s × %s)\n\n", t.Backend, t.Runtime)
	b.WriteString("Each session runs write_file + TurnComplete cycles in parallel with the others; the latencies are TurnComplete's, the throughput counts cycles per second of wall time. The raw baseline (btrfs) runs as many goroutines, each writing one file and taking a bare snapshot ioctl of its own subvolume per cycle.\n\n")
	b.WriteString("| op | sessions | files | n | p50 | p99 | cycles/s | raw p50 | raw p99 | raw cycles/s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, cmp := range sessions {
		t := cmp.Turnbox
		raw := "| | | |"
		for _, bl := range cmp.Baselines {
			if bl.Baseline == BaselineRaw {
				raw = fmt.Sprintf("| %s | %s | %.1f |", ms(bl.P50MS), ms(bl.P99MS), bl.OpsPerSec)
			}
		}
		fmt.Fprintf(b, "| %s | %d | %d | %d | %s | %s | %.1f %s\n", t.Op, t.Sessions, t.Files, t.N, ms(t.P50MS), ms(t.P99MS), t.OpsPerSec, raw)
	}
}

// writeMDSkipped writes what was not measured, and why, if anything.
func writeMDSkipped(b *strings.Builder, skipped []Skip) {
	if len(skipped) == 0 {
		return
	}
	b.WriteString("\n## Not measured\n\n| backend | runtime | op | why |\n|---|---|---|---|\n")
	for _, s := range skipped {
		why := s.Reason
		if s.Failed {
			why = "FAILED: " + why
		}
		op := s.Op
		if op == "" {
			op = "(all)"
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", s.Backend, s.Runtime, op, mdCell(why))
	}
}

// zfsRawWhat says what RawZFS times through the named driver.
func zfsRawWhat(driver string) string {
	switch driver {
	case zfs.DriverCommand:
		return "one `zfs` process each: `zfs snapshot`, `zfs rollback` to the newest snapshot, `zfs clone`"
	case zfs.DriverLZC:
		return "`lzc_snapshot`, `lzc_rollback_to` the newest snapshot, `lzc_clone` plus the libzfs mount"
	}
	return "snapshot, rollback to the newest snapshot, clone"
}

func writeComparison(b *strings.Builder, cmp Comparison) {
	t := cmp.Turnbox
	head := fmt.Sprintf("| %s | %d | %s | %s |", t.Op, t.N, ms(t.P50MS), ms(t.P99MS))
	if t.N == 0 {
		head = fmt.Sprintf("| %s | | – | – |", t.Op)
	}
	if len(cmp.Baselines) == 0 {
		b.WriteString(head + " | | | | |\n")
		return
	}
	for i, bl := range cmp.Baselines {
		if i > 0 {
			head = "| | | | |"
		}
		fmt.Fprintf(b, "%s %s | %d | %s | %s | %s |\n", head, bl.Baseline, bl.N, ms(bl.P50MS), ms(bl.P99MS), ratio(Ratio(t, bl)))
	}
}

func mdCell(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	s = strings.ReplaceAll(s, "|", `\|`)
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// ---- chart ----

// panel is one bar chart: categories top to bottom, each with bars.
type panel struct {
	title string
	cats  []string
	bars  [][]bar
}

type bar struct {
	series string // "turnbox" or a baseline name
	v      float64
}

// chartPanels returns a panel per matrix combination and one for the
// workspace size series.
func (r Report) chartPanels() []panel {
	var out []panel
	comps := r.Comparisons()
	add := func(p *panel, cat string, cmp Comparison) {
		var bs []bar
		if cmp.Turnbox.P50MS > 0 {
			bs = append(bs, bar{"turnbox", cmp.Turnbox.P50MS})
		}
		for _, bl := range cmp.Baselines {
			if bl.P50MS > 0 {
				bs = append(bs, bar{bl.Baseline, bl.P50MS})
			}
		}
		if len(bs) > 0 {
			p.cats = append(p.cats, cat)
			p.bars = append(p.bars, bs)
		}
	}
	for _, k := range r.combos() {
		p := panel{title: fmt.Sprintf("%s × %s: p50 ms (log scale)", k[0], k[1])}
		var rows []Comparison
		for _, cmp := range comps {
			if cmp.Turnbox.Series == "" && cmp.Turnbox.Backend == k[0] && cmp.Turnbox.Runtime == k[1] {
				rows = append(rows, cmp)
			}
		}
		slices.SortStableFunc(rows, func(a, b Comparison) int { return opOrder(a.Turnbox.Op) - opOrder(b.Turnbox.Op) })
		for _, cmp := range rows {
			add(&p, cmp.Turnbox.Op, cmp)
		}
		if len(p.cats) > 0 {
			out = append(out, p)
		}
	}
	var sp panel
	for _, cmp := range comps {
		t := cmp.Turnbox
		if t.Series != SeriesFiles {
			continue
		}
		if sp.title == "" {
			sp.title = fmt.Sprintf("%s × %s by workspace size: p50 ms (log scale)", t.Backend, t.Runtime)
		}
		add(&sp, fmt.Sprintf("%s, %s files", t.Op, countLabel(t.Files)), cmp)
	}
	if len(sp.cats) > 0 {
		out = append(out, sp)
	}
	return out
}

func countLabel(n int) string {
	switch {
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	default:
		return fmt.Sprint(n)
	}
}

var palette = []color.RGBA{
	{0x1f, 0x77, 0xb4, 0xff}, // turnbox: blue
	{0xff, 0x7f, 0x0e, 0xff},
	{0x2c, 0xa0, 0x2c, 0xff},
	{0xd6, 0x27, 0x28, 0xff},
	{0x94, 0x67, 0xbd, 0xff},
	{0x8c, 0x56, 0x4b, 0xff},
	{0xe3, 0x77, 0xc2, 0xff},
	{0x7f, 0x7f, 0x7f, 0xff},
	{0xbc, 0xbd, 0x22, 0xff},
	{0x17, 0xbe, 0xcf, 0xff},
}

// seriesColor gives each series a stable color: turnbox first, then the
// baselines in the order of the Baseline* constants.
func seriesColor(name string) color.Color {
	order := []string{"turnbox", BaselineFullCopy, BaselineRaw, BaselineHostForkExec, BaselineRunscExec, BaselineRunscRun, BaselineRuncExec, BaselineGVisorCheckpoint, BaselineGVisorRestore}
	i := slices.Index(order, name)
	if i < 0 {
		h := 0
		for _, c := range name {
			h = h*31 + int(c)
		}
		i = len(order) + (h&0x7fffffff)%(len(palette)-len(order))
	}
	return palette[i%len(palette)]
}

// barsPlotter draws a panel's bars from the left edge of the plot (the
// x axis is logarithmic: there is no zero) to each value, with the value
// written at the end of the bar.
type barsPlotter struct {
	p     panel
	label draw.TextStyle
}

func (bp barsPlotter) Plot(c draw.Canvas, plt *plot.Plot) {
	trX, trY := plt.Transforms(&c)
	slot := vg.Length(math.Abs(float64(trY(1) - trY(0))))
	x0 := trX(plt.X.Min)
	for i, bs := range bp.p.bars {
		// Category i is drawn at y = len-1-i so the first is on top.
		yc := trY(float64(len(bp.p.bars) - 1 - i))
		h := slot * 0.8 / vg.Length(len(bs))
		top := yc + slot*0.4
		for j, b := range bs {
			y1 := top - vg.Length(j)*h
			y0 := y1 - h*0.9
			x1 := trX(b.v)
			pts := c.ClipPolygonX([]vg.Point{{X: x0, Y: y0}, {X: x1, Y: y0}, {X: x1, Y: y1}, {X: x0, Y: y1}})
			c.FillPolygon(seriesColor(b.series), pts)
			c.FillText(bp.label, vg.Point{X: x1 + vg.Points(3), Y: (y0 + y1) / 2}, ms(b.v)+" "+b.series)
		}
	}
}

func (bp barsPlotter) DataRange() (xmin, xmax, ymin, ymax float64) {
	xmin, xmax = math.Inf(1), math.Inf(-1)
	for _, bs := range bp.p.bars {
		for _, b := range bs {
			xmin, xmax = min(xmin, b.v), max(xmax, b.v)
		}
	}
	if math.IsInf(xmin, 0) {
		xmin, xmax = 1, 10
	}
	// Room on the left for the shortest bar, on the right for labels.
	return xmin / 3, xmax * 40, -0.5, float64(len(bp.p.bars)) - 0.5
}

// sans sets every text of plt in a sans-serif face, smaller than the
// defaults so that long names fit.
func sans(plt *plot.Plot) {
	for _, f := range []*font.Font{&plt.Title.TextStyle.Font, &plt.X.Label.TextStyle.Font, &plt.X.Tick.Label.Font,
		&plt.Y.Tick.Label.Font, &plt.Legend.TextStyle.Font} {
		f.Typeface, f.Variant = "Liberation", "Sans"
	}
	plt.Title.TextStyle.Font.Size = font.Length(11)
	plt.X.Label.TextStyle.Font.Size = font.Length(9)
	plt.X.Tick.Label.Font.Size = font.Length(8)
	plt.Y.Tick.Label.Font.Size = font.Length(9)
	plt.Legend.TextStyle.Font.Size = font.Length(8)
}

// swatch is a legend entry's colored box.
type swatch struct{ c color.Color }

func (s swatch) Thumbnail(c *draw.Canvas) {
	// The right half of the slot only: a gap to the name before it, which
	// a viewer with another font may draw wider than measured.
	x0 := c.Min.X + (c.Max.X-c.Min.X)/2
	c.FillPolygon(s.c, []vg.Point{{X: x0, Y: c.Min.Y}, {X: x0, Y: c.Max.Y}, c.Max, {X: c.Max.X, Y: c.Min.Y}})
}

const (
	chartWidth   = 9 * vg.Inch
	chartBarH    = vg.Length(14)
	chartPadding = vg.Length(90)
)

// WriteChart writes r's medians as an SVG made of stacked horizontal bar
// charts on a log scale: one panel per backend × runtime (each op's
// turnbox bar with its baselines' bars under it, value and name at the
// end of each bar) and one for the workspace size series.
func WriteChart(w io.Writer, r Report) error {
	panels := r.chartPanels()
	if len(panels) == 0 {
		return errors.New("benchmarks: nothing to chart: the report has no results")
	}
	heights := make([]vg.Length, len(panels))
	var total vg.Length
	for i, p := range panels {
		n := 0
		for _, bs := range p.bars {
			n += len(bs) + 1
		}
		heights[i] = chartBarH*vg.Length(n) + chartPadding
		total += heights[i]
	}
	canvas := vgsvg.New(chartWidth, total)
	top := total
	for i, p := range panels {
		plt := plot.New()
		sans(plt)
		plt.Title.Text = p.title
		plt.X.Scale = plot.LogScale{}
		plt.X.Tick.Marker = plot.LogTicks{Prec: -1}
		plt.X.Label.Text = "milliseconds"
		// Room between the names and the bars: a viewer without the font
		// measured here draws the names wider, past their measured end.
		plt.X.Padding, plt.Y.Padding = 0, vg.Points(16)
		names := make([]string, len(p.cats))
		for j, cat := range p.cats {
			names[len(p.cats)-1-j] = cat
		}
		plt.NominalY(names...)
		label := plt.X.Tick.Label
		label.XAlign, label.YAlign = draw.XLeft, draw.YCenter
		label.Font.Size = font.Length(8)
		plt.Add(barsPlotter{p: p, label: label})
		var seen []string
		for _, bs := range p.bars {
			for _, b := range bs {
				if !slices.Contains(seen, b.series) {
					seen = append(seen, b.series)
					plt.Legend.Add(b.series, swatch{seriesColor(b.series)})
				}
			}
		}
		plt.Legend.Top = true
		plt.Legend.Padding = vg.Points(1)
		dc := draw.Canvas{Canvas: canvas, Rectangle: vg.Rectangle{Min: vg.Point{X: 0, Y: top - heights[i]}, Max: vg.Point{X: chartWidth, Y: top}}}
		// A left margin: a viewer without the font measured here may draw
		// the category names wider.
		plt.Draw(draw.Crop(dc, vg.Points(36), -vg.Points(8), vg.Points(4), -vg.Points(4)))
		top -= heights[i]
	}
	if _, err := canvas.WriteTo(w); err != nil {
		return fmt.Errorf("benchmarks: writing the chart: %w", err)
	}
	return nil
}
