package bench

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ssegw/ssegw/internal/ssetest"
)

// TestMain fails the package when a test leaves goroutines behind, and
// deletes the ssegw program that the tests built.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		ssetest.RemoveBinaries()
		os.Exit(code)
	}))
}

// TestRunGatewayAndReferences runs every workload with tiny settings
// against the direct connection, the plaintext gateway, the bare HTTP/2
// relay and grpc-proxy, and checks the tables, the files and that no
// process is left behind.
func TestRunGatewayAndReferences(t *testing.T) {
	executable := ssetest.Binary(t, "./cmd/ssegw")
	outDir := t.TempDir()
	var out, progress bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	err := Run(ctx, Options{
		Executable:        executable,
		Version:           "test",
		Targets:           []string{TargetDirect, TargetSSEGW, TargetGoH2Relay, TargetGRPCProxy},
		Duration:          100 * time.Millisecond,
		Rounds:            2,
		CallTimeout:       10 * time.Second,
		Concurrency:       4,
		LargeConcurrency:  2,
		LargeBundles:      5,
		LargeRows:         200,
		Levels:            []int{1, 8},
		MemoryConcurrency: 4,
		MemoryBundles:     2,
		OutDir:            outDir,
		Out:               &out,
		Progress:          &progress,
	})
	if err != nil {
		t.Fatalf("Run: %v\nprogress:\n%s", err, progress.String())
	}
	report := out.String()
	t.Logf("tables:\n%s", report)

	// Every workload has a table, with a row per target and ratios.
	for _, title := range []string{"Small calls:", "Large calls:", "Sweep: calls/s", "Sweep: p99", "Sweep: peak resident memory", "Memory at 4 concurrent"} {
		if !strings.Contains(report, title) {
			t.Errorf("no table %q in the output", title)
		}
	}
	rows := map[string]*regexp.Regexp{
		// Direct has no process of its own, so no CPU time; the gateway's
		// is a whole number of microseconds per call, never 0.
		"direct's small calls":     regexp.MustCompile(`(?m)^  direct +[0-9,]+ +1\.00× +[0-9.]+ +1\.00× +[0-9.,]+ +1\.00× +– +2/2$`),
		"ssegw's small calls":      regexp.MustCompile(`(?m)^  ssegw +[0-9,]+ +[0-9.]+× +[0-9.]+ +[0-9.]+× +[0-9.,]+ +[0-9.]+× +[1-9][0-9,]* +2/2$`),
		"ssegw's large calls":      regexp.MustCompile(`(?m)^  ssegw +[0-9,]+ +[0-9.]+ +[0-9.]+× +[0-9.,]+ +[0-9.]+× +2/2$`),
		"ssegw's sweep ratios":     regexp.MustCompile(`(?m)^  ssegw +[0-9,]+ \([0-9.]+×\) +[0-9,]+ \([0-9.]+×\)$`),
		"the relay's small calls":  regexp.MustCompile(`(?m)^  go-h2-relay +[0-9,]+ +[0-9.]+× +[0-9.]+ +[0-9.]+× +[0-9.,]+ +[0-9.]+× +[1-9][0-9,]* +2/2$`),
		"the relay's large calls":  regexp.MustCompile(`(?m)^  go-h2-relay +[0-9,]+ +[0-9.]+ +[0-9.]+× +[0-9.,]+ +[0-9.]+× +2/2$`),
		"grpc-proxy's small calls": regexp.MustCompile(`(?m)^  grpc-proxy +[0-9,]+ +[0-9.]+× +[0-9.]+ +[0-9.]+× +[0-9.,]+ +[0-9.]+× +[1-9][0-9,]* +2/2$`),
		"grpc-proxy's large calls": regexp.MustCompile(`(?m)^  grpc-proxy +[0-9,]+ +[0-9.]+ +[0-9.]+× +[0-9.,]+ +[0-9.]+× +2/2$`),
	}
	for name, pattern := range rows {
		if !pattern.MatchString(report) {
			t.Errorf("no row for %s matching %s", name, pattern)
		}
	}
	if strings.Contains(report, "Findings") {
		t.Errorf("the run reported findings; want none with these targets")
	}

	// The report and the plots are written, the plots well-formed.
	markdown, err := os.ReadFile(filepath.Join(outDir, ReportFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Machine", "| Go | " + runtime.Version(), "| Go runtime settings for every process | ", "### Small calls:", "![calls/s against concurrent streams](" + ThroughputPlotFile + ")"} {
		if !strings.Contains(string(markdown), want) {
			t.Errorf("no %q in %s", want, ReportFile)
		}
	}
	plots := map[string]string{
		ThroughputPlotFile: "direct,ssegw,go-h2-relay,grpc-proxy",
		LatencyPlotFile:    "direct,ssegw,go-h2-relay,grpc-proxy",
		MemoryPlotFile:     "ssegw,go-h2-relay,grpc-proxy", // direct has no process of its own
	}
	for file, want := range plots {
		document, err := os.ReadFile(filepath.Join(outDir, file))
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(parseSVG(t, document).series, ","); got != want {
			t.Errorf("%s has series %s, want %s", file, got, want)
		}
	}

	// Nothing the run started still runs.
	if runtime.GOOS == "linux" {
		if left := descendants(os.Getpid()); len(left) > 0 {
			t.Errorf("processes %v still run after Run returned", left)
		}
	}
}

// TestRunRejectsUnknownTarget checks that a misspelt target fails before
// anything starts.
func TestRunRejectsUnknownTarget(t *testing.T) {
	err := Run(context.Background(), Options{Executable: "/nonexistent", Targets: []string{"ngnix"}})
	if err == nil || !strings.Contains(err.Error(), `unknown target "ngnix"`) {
		t.Errorf("Run with target ngnix: %v, want an unknown target error", err)
	}
}

// TestSpansNote checks when the traced gateway's span count becomes a
// finding: only when calls got fewer than their two spans.
func TestSpansNote(t *testing.T) {
	tests := []struct {
		spans, calls int64
		missing      bool
	}{
		{spans: 200, calls: 100, missing: false},
		{spans: 203, calls: 100, missing: false}, // replays add spans
		{spans: 199, calls: 100, missing: true},
		{spans: 0, calls: 100, missing: true},
		{spans: 0, calls: 0, missing: false},
	}
	for _, tt := range tests {
		text, missing := spansNote("ssegw-tracing", tt.spans, tt.calls)
		if missing != tt.missing {
			t.Errorf("spansNote(%d spans, %d calls) missing = %v, want %v (%q)", tt.spans, tt.calls, missing, tt.missing, text)
		}
		if !strings.HasPrefix(text, "ssegw-tracing: the OTLP receiver got ") {
			t.Errorf("spansNote(%d spans, %d calls) = %q, want it to name the target and the count", tt.spans, tt.calls, text)
		}
	}
}
