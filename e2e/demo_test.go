package e2e

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ssegw/ssegw/internal/ssetest"
)

// TestDemo checks that `ssegw demo` exits with status 0 within a minute
// and that each engine's calls, by port and by host name, were served by
// its own plugin. The output must end with the "Demo finished" line, and
// the demo must remove its temporary folder.
func TestDemo(t *testing.T) {
	tmp := t.TempDir()
	p := ssetest.StartProcess(t, ssetest.Binary(t, "./cmd/ssegw"), []string{"TMPDIR=" + tmp}, "demo")
	if err := p.Wait(t, time.Minute); err != nil {
		t.Fatalf("ssegw demo: %v\nstdout:\n%s\nstderr:\n%s", err, p.Stdout(), p.Stderr())
	}
	out := p.Stdout()

	// Each section starts with "ENGINE via ..." and lists one line per
	// call that names the plugin which served it.
	section := regexp.MustCompile(`^(Example[AB]) via `)
	servedBy := regexp.MustCompile(`served by (\S+)`)
	pluginOf := map[string]string{"ExampleA": "example-a", "ExampleB": "example-b"}
	served := map[string]int{}
	engine := ""
	for line := range strings.Lines(out) {
		if m := section.FindStringSubmatch(line); m != nil {
			engine = m[1]
			continue
		}
		m := servedBy.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		served[m[1]]++
		if want := pluginOf[engine]; m[1] != want {
			t.Errorf("engine %q line %q: served by %s, want %s", engine, strings.TrimSpace(line), m[1], want)
		}
	}
	for _, plugin := range []string{"example-a", "example-b"} {
		if served[plugin] == 0 {
			t.Errorf("calls served by %s = 0, want at least 1\noutput:\n%s", plugin, out)
		}
	}

	// The gateway's record: one line per call, named after the engine and
	// function, OK, with a trace id, in aligned columns.
	record := regexp.MustCompile(`^  (Example[AB]\.\S+) +(\d+) +(\d+) +\S+  OK +([0-9a-f]{32})$`)
	recorded, traceColumn := 0, -1
	for line := range strings.Lines(out) {
		line = strings.TrimSuffix(line, "\n")
		m := record.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		recorded++
		// Columns count characters, as the terminal shows them and as fmt
		// pads: "µs" takes one byte more than it shows.
		column := utf8.RuneCountInString(line[:strings.Index(line, m[4])])
		if traceColumn == -1 {
			traceColumn = column
		} else if column != traceColumn {
			t.Errorf("record %q: trace id in column %d, want %d as in the first record", line, column, traceColumn)
		}
	}
	if recorded < 6 {
		t.Errorf("got %d records of calls, want at least 6 (3 per engine)\noutput:\n%s", recorded, out)
	}

	lines := strings.Split(strings.TrimSpace(out), "\n")
	if last, want := lines[len(lines)-1], "Demo finished"; !strings.HasPrefix(last, want) {
		t.Errorf("last line of output = %q, want it to start with %q", last, want)
	}

	entries, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	for _, entry := range entries {
		t.Errorf("left in the temporary folder after exit: %s, want nothing", entry.Name())
	}
}
