package e2e

import (
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ssegw/ssegw/internal/ssetest"
)

// demoSection is the part of `ssegw demo`'s output about the calls to one
// engine by one route: its "ENGINE via ..." line and the lines after it.
type demoSection struct {
	engine string
	// host is the host name that chose the engine on a shared listener,
	// or empty for an engine's own port.
	host    string
	address string
	lines   []string
}

// demoSections returns the sections of the demo's output in order.
func demoSections(out string) []*demoSection {
	byPort := regexp.MustCompile(`^(Example[AB]) via port (\S+)$`)
	byHost := regexp.MustCompile(`^(Example[AB]) via host (\S+) on (\S+)$`)
	var sections []*demoSection
	for line := range strings.Lines(out) {
		line = strings.TrimSuffix(line, "\n")
		if m := byPort.FindStringSubmatch(line); m != nil {
			sections = append(sections, &demoSection{engine: m[1], address: m[2]})
		} else if m := byHost.FindStringSubmatch(line); m != nil {
			sections = append(sections, &demoSection{engine: m[1], host: m[2], address: m[3]})
		} else if len(sections) > 0 && strings.HasPrefix(line, "  ") {
			last := sections[len(sections)-1]
			last.lines = append(last.lines, line)
		} else if line != "" && len(sections) > 0 {
			break // the table of records follows the sections
		}
	}
	return sections
}

// TestDemo checks that `ssegw demo` exits with status 0 within a minute
// after it calls each engine on its own port and by host name on a shared
// listener. In each of the 4 output sections the engine's own plugin must
// serve GetCapabilities, SumOfRows with the right sums and ScriptEvalStr
// with the words sent, and the gateway's record must list the 12 calls,
// 6 per engine, each OK with a trace id. The output must end with the
// "Demo finished" line, and the demo must remove its temporary folder.
func TestDemo(t *testing.T) {
	tmp := t.TempDir()
	p := ssetest.StartProcess(t, ssetest.Binary(t, "./cmd/ssegw"), []string{"TMPDIR=" + tmp}, "demo")
	if err := p.Wait(t, time.Minute); err != nil {
		t.Fatalf("ssegw demo: %v\nstdout:\n%s\nstderr:\n%s", err, p.Stdout(), p.Stderr())
	}
	out := p.Stdout()
	pluginOf := map[string]string{"ExampleA": "example-a", "ExampleB": "example-b"}

	// One section per engine and route.
	sections := demoSections(out)
	byPort, byHost := map[string]*demoSection{}, map[string]*demoSection{}
	for _, section := range sections {
		routes := byPort
		if section.host != "" {
			routes = byHost
		}
		if routes[section.engine] != nil {
			t.Errorf("two sections for %s by the same route, at %s and %s", section.engine, routes[section.engine].address, section.address)
		}
		routes[section.engine] = section
	}
	if len(sections) != 4 || len(byPort) != 2 || len(byHost) != 2 {
		t.Fatalf("got %d sections (%d by port, %d by host name), want 4: each engine by port and by host name\noutput:\n%s", len(sections), len(byPort), len(byHost), out)
	}
	if a, b := byPort["ExampleA"].address, byPort["ExampleB"].address; a == b {
		t.Errorf("both engines were called by port on %s, want a port each", a)
	}
	shared := byHost["ExampleA"].address
	if other := byHost["ExampleB"].address; other != shared {
		t.Errorf("engines called by host name on %s and %s, want one shared listener", shared, other)
	}
	if byHost["ExampleA"].host == byHost["ExampleB"].host {
		t.Errorf("both engines were called by host name %s, want a name each", byHost["ExampleA"].host)
	}
	for _, section := range byPort {
		if section.address == shared {
			t.Errorf("%s's own port %s is the shared listener, want a listener of its own", section.engine, section.address)
		}
	}

	// Each section's three calls, served by the engine's plugin.
	for _, section := range sections {
		plugin := pluginOf[section.engine]
		route := "port " + section.address
		if section.host != "" {
			route = "host " + section.host
		}
		want := []*regexp.Regexp{
			regexp.MustCompile(`^  GetCapabilities +served by ` + plugin + ` +functions: Echo, SumOfRows, SumOfColumn; scripts allowed: true$`),
			regexp.MustCompile(`^  ` + section.engine + `\.SumOfRows +served by ` + plugin + ` +\[1\+2 10\+20 0\.5\+0\.25\] = \[3 30 0\.75\] in \S+$`),
			regexp.MustCompile(`^  ScriptEvalStr +served by ` + plugin + ` +\[hello Qlik\] = \[hello Qlik\]$`),
		}
		if len(section.lines) != len(want) {
			t.Errorf("%s via %s: %d lines, want %d:\n%s", section.engine, route, len(section.lines), len(want), strings.Join(section.lines, "\n"))
			continue
		}
		for i, pattern := range want {
			if !pattern.MatchString(section.lines[i]) {
				t.Errorf("%s via %s: line %q, want it to match %s", section.engine, route, section.lines[i], pattern)
			}
		}
	}

	// The gateway's record: one line per call, named after the engine and
	// function, with its rows in and out, OK, with a trace id, in aligned
	// columns.
	record := regexp.MustCompile(`^  (Example[AB])\.(\S+) +(\d+) +(\d+) +\S+  (\S+) +([0-9a-f]{32})$`)
	recorded := map[string]int{}
	traceColumn := -1
	for line := range strings.Lines(out) {
		line = strings.TrimSuffix(line, "\n")
		m := record.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		recorded[fmt.Sprintf("%s.%s rows %s/%s %s", m[1], m[2], m[3], m[4], m[5])]++
		// Columns count characters, as the terminal shows them and as fmt
		// pads: "µs" takes one byte more than it shows.
		column := utf8.RuneCountInString(line[:strings.Index(line, m[6])])
		if traceColumn == -1 {
			traceColumn = column
		} else if column != traceColumn {
			t.Errorf("record %q: trace id in column %d, want %d as in the first record", line, column, traceColumn)
		}
	}
	// Per engine: 2 routes of GetCapabilities (no rows), SumOfRows (3 rows)
	// and ScriptEvalStr (2 rows).
	wantRecorded := map[string]int{}
	for engine := range pluginOf {
		wantRecorded[engine+".GetCapabilities rows 0/0 OK"] = 2
		wantRecorded[engine+".SumOfRows rows 3/3 OK"] = 2
		wantRecorded[engine+".ScriptEvalStr rows 2/2 OK"] = 2
	}
	keys := map[string]bool{}
	for key := range wantRecorded {
		keys[key] = true
	}
	for key := range recorded {
		keys[key] = true
	}
	for _, key := range slices.Sorted(maps.Keys(keys)) {
		if recorded[key] != wantRecorded[key] {
			t.Errorf("records of %s = %d, want %d", key, recorded[key], wantRecorded[key])
		}
	}

	lines := strings.Split(strings.TrimSpace(out), "\n")
	if last, want := lines[len(lines)-1], "Demo finished"; !strings.HasPrefix(last, want) {
		t.Errorf("last line of output = %q, want it to start with %q", last, want)
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}

	entries, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	for _, entry := range entries {
		t.Errorf("left in the temporary folder after exit: %s, want nothing", entry.Name())
	}
}
