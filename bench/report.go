package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Files that a run writes to Options.OutDir.
const (
	ReportFile         = "bench.md"
	ThroughputPlotFile = "sweep-throughput.svg"
	LatencyPlotFile    = "sweep-p99.svg"
	MemoryPlotFile     = "sweep-rss.svg"
)

// machineInfo describes the machine and the programs of a run.
type machineInfo struct {
	date      time.Time
	cpu       string
	cores     int
	memory    string
	kernel    string
	goVersion string
	ssegw     string
	nginx     string
	haproxy   string
	// loadStart and loadEnd are the load averages when the run started
	// and ended, which show other work that shared the machine.
	loadStart string
	loadEnd   string
	// goRuntime lists the Go runtime's environment variables that reach
	// every process the benchmark starts, or "none". GOGC among them
	// turns the heap floor of the gateway and of the Go references off.
	goRuntime string
}

// goRuntimeSettings returns the Go runtime variables set in the
// environment, which the benchmark passes on to its children.
func goRuntimeSettings() string {
	var set []string
	for _, name := range []string{"GOGC", "GOMEMLIMIT", "GODEBUG", "GOMAXPROCS"} {
		if value := os.Getenv(name); value != "" {
			set = append(set, name+"="+value)
		}
	}
	if len(set) == 0 {
		return "none"
	}
	return strings.Join(set, " ")
}

// readMachine collects the description of the machine for the report.
// Values that cannot be read are reported as unknown.
func readMachine(version string) machineInfo {
	info := machineInfo{
		date:      time.Now(),
		cpu:       "unknown",
		cores:     runtime.NumCPU(),
		memory:    "unknown",
		kernel:    runtime.GOOS + ", version unknown",
		goVersion: runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH,
		ssegw:     version,
		nginx:     programVersion("nginx", "-v"),
		haproxy:   programVersion("haproxy", "-v"),
		loadStart: loadAverage(),
		goRuntime: goRuntimeSettings(),
	}
	if value := procField("/proc/cpuinfo", "model name"); value != "" {
		info.cpu = value
	}
	if value := procField("/proc/meminfo", "MemTotal"); value != "" {
		info.memory = formatMemTotal(value)
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		info.kernel = "Linux " + strings.TrimSpace(string(data))
	}
	if info.ssegw == "" {
		info.ssegw = "unknown"
	}
	return info
}

// procField returns the value of the first "key: value" line of a /proc
// file, or "".
func procField(file, key string) string {
	data, err := os.ReadFile(file)
	if err != nil {
		return ""
	}
	scanner := bufio.NewScanner(bytes.NewReader(data))
	for scanner.Scan() {
		name, value, ok := strings.Cut(scanner.Text(), ":")
		if ok && strings.TrimSpace(name) == key {
			return strings.TrimSpace(value)
		}
	}
	return ""
}

// formatMemTotal turns MemTotal from /proc/meminfo, such as "24683792
// kB", into GiB, or returns it unchanged when it reads otherwise.
func formatMemTotal(value string) string {
	kilobytes, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(value, "kB")), 10, 64)
	if err != nil {
		return value
	}
	return fmt.Sprintf("%.1f GiB", float64(kilobytes)/(1<<20))
}

// loadAverage returns the 1, 5 and 15 minute load averages from
// /proc/loadavg, or "unknown".
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	fields := strings.Fields(string(data))
	if err != nil || len(fields) < 3 {
		return "unknown"
	}
	return strings.Join(fields[:3], " ")
}

// programVersion returns the first line that program prints with its
// version flag, or "not installed".
func programVersion(program, flag string) string {
	path, err := findProgram(program)
	if err != nil {
		return "not installed"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, flag).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("unknown (%s %s failed: %v)", path, flag, err)
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

// report writes the tables to Out and, with OutDir, the Markdown report
// and the plots.
func (b *bench) report() error {
	b.machine.loadEnd = loadAverage()
	tables := b.tables()
	m := b.machine
	fmt.Fprintf(b.opts.Out, "\n%s\nMachine: %s, %d cores, %s, %s; load average %s at the start, %s at the end; Go runtime settings for every process: %s.\n\n",
		b.summaryLine(), m.cpu, m.cores, m.kernel, m.goVersion, m.loadStart, m.loadEnd, m.goRuntime)
	for _, t := range tables {
		if err := t.writeText(b.opts.Out); err != nil {
			return fmt.Errorf("writing the tables: %w", err)
		}
	}
	if len(b.notes) > 0 {
		fmt.Fprintln(b.opts.Out, "Notes")
		for _, note := range b.notes {
			fmt.Fprintf(b.opts.Out, "  - %s\n", note)
		}
		fmt.Fprintln(b.opts.Out)
	}
	if len(b.findings) > 0 {
		fmt.Fprintln(b.opts.Out, "Findings")
		for _, finding := range b.findings {
			fmt.Fprintf(b.opts.Out, "  - %s\n", indentAfterFirst(finding, "    "))
		}
		fmt.Fprintln(b.opts.Out)
	}
	if b.opts.OutDir == "" {
		return nil
	}
	if err := b.writeFiles(tables); err != nil {
		return err
	}
	fmt.Fprintf(b.opts.Out, "Wrote %s and the sweep's plots to %s\n", ReportFile, b.opts.OutDir)
	return nil
}

// summaryLine returns how the numbers were made, in one line.
func (b *bench) summaryLine() string {
	return fmt.Sprintf("ssegw bench: %s of %v per setting, targets interleaved within each round; medians over the rounds; ×direct is the target's median divided by direct's.",
		b.roundsText(), b.opts.Duration)
}

// roundsText returns the number of rounds with its noun, such as "3
// rounds".
func (b *bench) roundsText() string {
	if b.opts.Rounds == 1 {
		return "1 round"
	}
	return fmt.Sprintf("%d rounds", b.opts.Rounds)
}

// tables builds the result tables of the workloads that ran.
func (b *bench) tables() []table {
	var tables []table
	if slices.Contains(b.opts.Workloads, WorkloadSmall) {
		tables = append(tables, b.smallTable())
	}
	if slices.Contains(b.opts.Workloads, WorkloadLarge) {
		tables = append(tables, b.largeTable())
	}
	if slices.Contains(b.opts.Workloads, WorkloadSweep) {
		tables = append(tables, b.sweepTables()...)
	}
	if slices.Contains(b.opts.Workloads, WorkloadMemory) {
		tables = append(tables, b.memoryTable())
	}
	return tables
}

// tableTargets returns the selected targets' names in table order, and
// why the ones that did not run are missing.
func (b *bench) tableTargets() (names []string, absent map[string]string) {
	absent = map[string]string{}
	for _, name := range AllTargets {
		if !slices.Contains(b.opts.Targets, name) {
			continue
		}
		names = append(names, name)
		if !slices.ContainsFunc(b.targets, func(t *target) bool { return t.name == name }) {
			absent[name] = "did not run"
			for _, finding := range b.findings {
				if strings.HasPrefix(finding, name+": not installed") {
					absent[name] = "not installed"
				}
			}
		}
	}
	return names, absent
}

// measuredRow returns the table row of one target at p: its name, then
// one cell per column from cells, or a row that gives the reason it has
// no numbers. A target that counted in some rounds only shows their
// numbers, and its rounds column gives their count.
func (b *bench) measuredRow(p point, absent map[string]string, columns int, cells func() []string) []string {
	row := []string{p.target}
	reason := absent[p.target]
	if reason == "" && len(b.results.runs[p]) == 0 {
		reason = b.results.problems[p]
		if reason == "" {
			reason = noValue
		}
	}
	if reason != "" {
		row = append(row, reason)
		for len(row) < columns {
			row = append(row, "")
		}
		return row
	}
	return append(row, cells()...)
}

// smallTable shows the small calls' rate and latency.
func (b *bench) smallTable() table {
	names, absent := b.tableTargets()
	t := table{
		title: fmt.Sprintf("Small calls: SumOfRows, one bundle of %d rows, %d concurrent callers on one connection", b.opts.SmallRows, b.opts.Concurrency),
		notes: []string{
			"Latency is per call, from opening the stream to the plugin's status.",
			"CPU is the target's own time on CPU per call, summed over its threads and workers: what it costs the machine, apart from the client and the plugin.",
		},
		header: []string{"target", "calls/s", "×direct", "p50 ms", "×direct", "p99 ms", "×direct", "CPU µs/call", "rounds"},
	}
	direct := point{WorkloadSmall, b.opts.Concurrency, TargetDirect}
	for _, name := range names {
		p := point{WorkloadSmall, b.opts.Concurrency, name}
		t.rows = append(t.rows, b.measuredRow(p, absent, len(t.header), func() []string {
			rate := b.results.medianOf(p, runResult.callsPerSecond)
			p50 := b.results.medianOf(p, func(r runResult) float64 { return r.latency(50) })
			p99 := b.results.medianOf(p, func(r runResult) float64 { return r.latency(99) })
			return []string{
				formatCount(rate), formatRatio(ratio(rate, b.results.medianOf(direct, runResult.callsPerSecond))),
				formatMillis(p50), formatRatio(ratio(p50, b.results.medianOf(direct, func(r runResult) float64 { return r.latency(50) }))),
				formatMillis(p99), formatRatio(ratio(p99, b.results.medianOf(direct, func(r runResult) float64 { return r.latency(99) }))),
				formatCount(b.results.medianOf(p, runResult.cpuPerCall)),
				b.roundsCell(p),
			}
		}))
	}
	return t
}

// largeTable shows the large calls' throughput and call duration.
func (b *bench) largeTable() table {
	names, absent := b.tableTargets()
	call, _ := newEchoCall(1, b.opts.LargeRows)
	t := table{
		title: fmt.Sprintf("Large calls: Echo, %d bundles of %s rows, %d concurrent callers, sending and reading at once",
			b.opts.LargeBundles, formatCount(float64(b.opts.LargeRows)), b.opts.LargeConcurrency),
		notes: []string{
			fmt.Sprintf("Each row has 3 numeric columns and 1 string column; a bundle is %s bytes. MB/s counts the response's bytes, 10^6 to the MB; the request is as large.",
				formatCount(float64(call.requestBytes()))),
		},
		header: []string{"target", "rows/s", "MB/s", "×direct", "p50 call ms", "×direct", "rounds"},
	}
	direct := point{WorkloadLarge, b.opts.LargeConcurrency, TargetDirect}
	for _, name := range names {
		p := point{WorkloadLarge, b.opts.LargeConcurrency, name}
		t.rows = append(t.rows, b.measuredRow(p, absent, len(t.header), func() []string {
			megabytes := b.results.medianOf(p, runResult.megabytesPerSecond)
			p50 := b.results.medianOf(p, func(r runResult) float64 { return r.latency(50) })
			return []string{
				formatCount(b.results.medianOf(p, runResult.rowsPerSecond)),
				formatMegabytes(megabytes), formatRatio(ratio(megabytes, b.results.medianOf(direct, runResult.megabytesPerSecond))),
				formatMillis(p50), formatRatio(ratio(p50, b.results.medianOf(direct, func(r runResult) float64 { return r.latency(50) }))),
				b.roundsCell(p),
			}
		}))
	}
	return t
}

// sweepMetrics are the sweep's three tables and plots: how each reads a
// run, formats a value, and whether it has a ratio to direct.
var sweepMetrics = []struct {
	title     string
	plotTitle string
	axisLabel string
	file      string
	value     func(runResult) float64
	format    func(float64) string
	withRatio bool
}{
	{
		"calls/s by concurrent streams, with the ratio to direct", "calls/s against concurrent streams", "calls/s",
		ThroughputPlotFile, runResult.callsPerSecond, formatCount, true,
	},
	{
		"p99 latency in ms by concurrent streams, with the ratio to direct", "p99 latency against concurrent streams", "p99 latency, ms",
		LatencyPlotFile, func(r runResult) float64 { return r.latency(99) }, formatMillis, true,
	},
	{
		"peak resident memory (VmRSS) of the target's processes in MiB by concurrent streams", "resident memory against concurrent streams", "peak VmRSS, MiB",
		MemoryPlotFile, runResult.rssMiB, formatMiB, false,
	},
}

// sweepTables shows the sweep: one table per metric, one column per level.
func (b *bench) sweepTables() []table {
	names, absent := b.tableTargets()
	header := []string{"target"}
	for _, level := range b.opts.Levels {
		header = append(header, formatCount(float64(level)))
	}
	var tables []table
	for _, metric := range sweepMetrics {
		t := table{
			title:  "Sweep: " + metric.title,
			notes:  []string{fmt.Sprintf("SumOfRows calls of %d rows; each caller keeps one stream open at a time, all on one client connection.", b.opts.SmallRows)},
			header: header,
		}
		if !metric.withRatio {
			t.notes = append(t.notes, nginxMemoryNote)
		}
		if b.partial(WorkloadSweep) {
			t.notes = append(t.notes, partialNote)
		}
		for _, name := range names {
			row := []string{name}
			for _, level := range b.opts.Levels {
				row = append(row, b.sweepCell(point{WorkloadSweep, level, name}, absent, metric.value, metric.format, metric.withRatio))
			}
			t.rows = append(t.rows, row)
		}
		tables = append(tables, t)
	}
	return tables
}

// sweepCell formats one target's median at one level, with its ratio to
// direct when withRatio is set.
func (b *bench) sweepCell(p point, absent map[string]string, value func(runResult) float64, format func(float64) string, withRatio bool) string {
	if reason := absent[p.target]; reason != "" {
		return reason
	}
	text := b.cell(p, value, format)
	median := b.results.medianOf(p, value)
	if withRatio && p.target != TargetDirect && !math.IsNaN(median) {
		direct := b.results.medianOf(point{p.workload, p.level, TargetDirect}, value)
		text += " (" + formatRatio(ratio(median, direct)) + ")"
	}
	return text
}

// nginxMemoryNote explains how the memory of a target with several
// processes is counted.
const nginxMemoryNote = "Direct has no process between client and plugin. nginx counts its master's VmRSS and the memory each worker holds privately (Private_Clean and Private_Dirty), so that the pages they share count once."

// memoryTable compares the resident memory of fresh targets under small
// and large calls. Direct has no memory of its own to show, but its rate
// of large calls is the baseline for the others'.
func (b *bench) memoryTable() table {
	names, absent := b.tableTargets()
	call, _ := newEchoCall(1, b.opts.LargeRows)
	t := table{
		title: fmt.Sprintf("Memory at %d concurrent callers: peak resident memory (VmRSS) in MiB, each run in a freshly started process", b.opts.MemoryConcurrency),
		notes: []string{
			fmt.Sprintf("Small calls are SumOfRows with one bundle of %d rows; large calls are Echo with %d bundles of %s bytes each, sent and read at once.",
				b.opts.SmallRows, b.opts.MemoryBundles, formatCount(float64(call.requestBytes()))),
			nginxMemoryNote,
			"Large MB/s is measured from a fresh start of each proxy, so it includes the ramp-up of connections and flow control windows; direct keeps its connection.",
		},
		header: []string{"target", "after start", "small calls", "large calls", "large ÷ small", "large MB/s", "rounds"},
	}
	if b.partial(memorySmall, memoryLarge) {
		t.notes = append(t.notes, partialNote)
	}
	for _, name := range names {
		smallPoint := point{memorySmall, b.opts.MemoryConcurrency, name}
		largePoint := point{memoryLarge, b.opts.MemoryConcurrency, name}
		row := []string{name}
		if reason := absent[name]; reason != "" {
			t.rows = append(t.rows, append(row, reason, "", "", "", "", ""))
			continue
		}
		var idle []float64
		for _, rss := range b.results.idleRSS[name] {
			idle = append(idle, float64(rss)/(1<<20))
		}
		growth := ratio(b.results.medianOf(largePoint, runResult.rssMiB), b.results.medianOf(smallPoint, runResult.rssMiB))
		t.rows = append(t.rows, append(row,
			formatMiB(median(idle)),
			b.cell(smallPoint, runResult.rssMiB, formatMiB),
			b.cell(largePoint, runResult.rssMiB, formatMiB),
			strings.TrimSuffix(formatRatio(growth), "×"),
			b.cell(largePoint, runResult.megabytesPerSecond, formatMegabytes),
			fmt.Sprintf("%d/%d", min(len(b.results.runs[smallPoint]), len(b.results.runs[largePoint])), b.opts.Rounds),
		))
	}
	return t
}

// cell formats the median of value over the rounds at p that counted,
// with an asterisk when some rounds did not count, or the problem when
// none did.
func (b *bench) cell(p point, value func(runResult) float64, format func(float64) string) string {
	problem := b.results.problems[p]
	if len(b.results.runs[p]) == 0 && problem != "" {
		return problem
	}
	text := format(b.results.medianOf(p, value))
	if problem != "" {
		text += partialMark
	}
	return text
}

// partialMark follows a value from fewer rounds than the run had, and
// partialNote explains it under the table.
const (
	partialMark = "*"
	partialNote = "* Some rounds did not count; the findings give the reason."
)

// partial reports whether some point of the workloads has both rounds
// that counted and a problem, so that its cell has the partialMark.
func (b *bench) partial(workloads ...string) bool {
	for p := range b.results.problems {
		if slices.Contains(workloads, p.workload) && len(b.results.runs[p]) > 0 {
			return true
		}
	}
	return false
}

// formatMegabytes formats a rate in MB/s with one decimal.
func formatMegabytes(megabytes float64) string {
	if math.IsNaN(megabytes) {
		return noValue
	}
	return fmt.Sprintf("%.1f", megabytes)
}

// roundsCell returns how many rounds at p counted, out of how many.
func (b *bench) roundsCell(p point) string {
	return fmt.Sprintf("%d/%d", len(b.results.runs[p]), b.opts.Rounds)
}

// writeFiles writes the Markdown report and the sweep's plots to OutDir.
func (b *bench) writeFiles(tables []table) error {
	if err := os.MkdirAll(b.opts.OutDir, 0o755); err != nil {
		return fmt.Errorf("making the output folder: %w", err)
	}

	// The plots, when the sweep ran.
	var plots []string
	if slices.Contains(b.opts.Workloads, WorkloadSweep) {
		for _, metric := range sweepMetrics {
			var out bytes.Buffer
			if err := b.sweepPlot(metric.plotTitle, metric.axisLabel, metric.value).writeSVG(&out); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(b.opts.OutDir, metric.file), out.Bytes(), 0o644); err != nil {
				return fmt.Errorf("writing %s: %w", metric.file, err)
			}
			plots = append(plots, fmt.Sprintf("![%s](%s)", metric.plotTitle, metric.file))
		}
	}

	// The report.
	var out bytes.Buffer
	b.writeMarkdown(&out, tables, plots)
	if err := os.WriteFile(filepath.Join(b.opts.OutDir, ReportFile), out.Bytes(), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", ReportFile, err)
	}
	return nil
}

// sweepPlot returns the plot of one metric against the sweep's levels,
// one line per target that has a value at some level. Direct has none in
// the memory plot.
func (b *bench) sweepPlot(title, axisLabel string, value func(runResult) float64) linePlot {
	plot := linePlot{title: title, xLabel: "concurrent streams", yLabel: axisLabel}
	for _, level := range b.opts.Levels {
		plot.xValues = append(plot.xValues, float64(level))
	}
	for _, t := range b.targets {
		series := plotSeries{name: t.name}
		for _, level := range b.opts.Levels {
			series.values = append(series.values, b.results.medianOf(point{WorkloadSweep, level, t.name}, value))
		}
		if slices.ContainsFunc(series.values, func(v float64) bool { return !math.IsNaN(v) }) {
			plot.series = append(plot.series, series)
		}
	}
	return plot
}

// writeMarkdown writes the report: the machine, the method, the tables,
// the plots and the findings.
func (b *bench) writeMarkdown(w *bytes.Buffer, tables []table, plots []string) {
	m := b.machine
	fmt.Fprintf(w, "# ssegw benchmark\n\n")
	fmt.Fprintf(w, "Made by `ssegw bench` on %s: %s of %v per setting.\n\n", m.date.Format("2006-01-02 15:04 MST"), b.roundsText(), b.opts.Duration)

	fmt.Fprintf(w, "## Machine\n\n| | |\n|---|---|\n")
	rows := [][2]string{
		{"CPU", fmt.Sprintf("%s, %d cores as the Go runtime counts them", m.cpu, m.cores)},
		{"Memory", m.memory},
		{"Kernel", m.kernel},
		{"Go", m.goVersion},
		{"ssegw", m.ssegw},
		{"nginx", m.nginx},
		{"HAProxy", m.haproxy},
		{"Load average (1, 5, 15 min)", fmt.Sprintf("%s at the start, %s at the end", m.loadStart, m.loadEnd)},
		{"Go runtime settings for every process", m.goRuntime},
	}
	for _, row := range rows {
		fmt.Fprintf(w, "| %s | %s |\n", row[0], strings.ReplaceAll(row[1], "|", `\|`))
	}

	fmt.Fprintf(w, "\n## Method\n\n")
	fmt.Fprintf(w, "Targets, each started by the benchmark on 127.0.0.1 with its own configuration, in front of one example plugin process (`ssegw plugin`):\n\n")
	for _, name := range AllTargets {
		if slices.Contains(b.opts.Targets, name) {
			fmt.Fprintf(w, "- **%s**: %s\n", name, targetDescriptions[name])
		}
	}
	fmt.Fprintf(w, "\nHow the numbers are made:\n\n- %s\n", strings.Join([]string{
		fmt.Sprintf("Each setting runs %s, and each round runs every target once, one after the other, so that a change in the machine's speed during the benchmark affects all targets alike.", b.roundsText()),
		"The tables give the median over the rounds, and ×direct is a target's median divided by direct's: below 1 is less throughput, above 1 a longer latency.",
		"Each setting starts with an unmeasured warm-up per target.",
		fmt.Sprintf("A run's window lasts %v. Only calls that ended within it count for calls/s, and only response rows that arrived within it for rows/s and MB/s. Latencies count every call that ended well, also after the window.", b.opts.Duration),
		"Each level of the sweep, and each half of the memory workload, starts with freshly started target processes, so that the resident memory shows what that setting needs and not what an earlier one left behind.",
		fmt.Sprintf("Every call has a %v deadline. A target whose calls reach it, stalled or only slow, or fail, is reported below and left out of the rest of that workload.", b.opts.CallTimeout),
		"The client sends pre-marshalled bundles and only measures the responses' sizes, so that its cost is small and the same for every target.",
		fmt.Sprintf("The client, the target and the plugin share the machine's %d cores, so a target's own CPU use slows the client and the plugin too.", m.cores),
		"The gateways run with the access log off, because it writes one record per call, a cost that weighs on small calls; `--access-log` turns it on to measure that cost.",
	}, "\n- "))
	if b.opts.AccessLog {
		fmt.Fprintf(w, "- This run had the access log on.\n")
	}

	fmt.Fprintf(w, "\n## Results\n\n")
	for _, t := range tables {
		_ = t.writeMarkdown(w) // a bytes.Buffer does not fail
	}
	for _, plot := range plots {
		fmt.Fprintf(w, "%s\n\n", plot)
	}

	if len(b.notes) > 0 {
		fmt.Fprintf(w, "## Notes\n\n")
		for _, note := range b.notes {
			fmt.Fprintf(w, "- %s\n", note)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "## Findings\n\n")
	if len(b.findings) == 0 {
		fmt.Fprintf(w, "Every target completed every run.\n")
	}
	for _, finding := range b.findings {
		fmt.Fprintf(w, "- %s\n", indentAfterFirst(finding, "  "))
	}
}

// indentAfterFirst indents every line of text after the first, so that
// a multi-line finding stays in its list item.
func indentAfterFirst(text, indent string) string {
	return strings.ReplaceAll(text, "\n", "\n"+indent)
}
