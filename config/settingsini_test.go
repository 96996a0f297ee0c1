package config_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/ssegw/ssegw/config"
)

// plugin returns the SSEPlugin that ReadSSEPlugins reads from entry at
// position, with Qlik's defaults where entry leaves a field out.
func plugin(position int, entry string, certFolder string, requestTimeout, reconnectTimeout time.Duration) config.SSEPlugin {
	fields := strings.Split(entry, ",")
	return config.SSEPlugin{
		Position:         position,
		Name:             fields[0],
		Address:          fields[1],
		CertFolder:       certFolder,
		RequestTimeout:   requestTimeout,
		ReconnectTimeout: reconnectTimeout,
		Fields:           fields,
	}
}

// entryProblem is one problem expected from ReadSSEPlugins: its message
// starts with prefix, such as `entry 2 ("R,localhost:port")`, and contains
// text.
type entryProblem struct {
	prefix string
	text   string
}

// checkEntryProblems fails the test unless problems are exactly want, in
// order.
func checkEntryProblems(t *testing.T, problems []error, want []entryProblem) {
	t.Helper()
	if len(problems) != len(want) {
		t.Errorf("ReadSSEPlugins() problems = %d %q, want %d", len(problems), problems, len(want))
	}
	for i := 0; i < len(problems) && i < len(want); i++ {
		message := problems[i].Error()
		if !strings.HasPrefix(message, want[i].prefix) {
			t.Errorf("ReadSSEPlugins() problem %d = %q, want it to start with %q", i, message, want[i].prefix)
		}
		if !strings.Contains(message, want[i].text) {
			t.Errorf("ReadSSEPlugins() problem %d = %q, want it to contain %q", i, message, want[i].text)
		}
	}
}

// TestReadSSEPlugins checks the entries read from well-formed SSEPlugin
// lines: optional fields, Windows paths, spacing, the section and key
// rules of INI files, and which of several lines counts.
func TestReadSSEPlugins(t *testing.T) {
	const python = `C:\Program Files\Qlik\certs\python`
	tests := []struct {
		name string
		text string
		want []config.SSEPlugin
	}{
		{
			name: "one plugin",
			text: "[Settings 7]\nSSEPlugin=SSEPython,localhost:50051\n",
			want: []config.SSEPlugin{
				plugin(1, "SSEPython,localhost:50051", "", 0, 20*time.Second),
			},
		},
		{
			name: "several plugins",
			text: "[Settings 7]\nSSEPlugin=SSEPython,localhost:50051;R,localhost:50053\n",
			want: []config.SSEPlugin{
				plugin(1, "SSEPython,localhost:50051", "", 0, 20*time.Second),
				plugin(2, "R,localhost:50053", "", 0, 20*time.Second),
			},
		},
		{
			name: "empty optional fields keep the defaults",
			text: "[Settings 7]\nSSEPlugin=SSEPython,localhost:50051,,0,20;R,localhost:50053,,,;Julia,localhost:50054,,15\n",
			want: []config.SSEPlugin{
				plugin(1, "SSEPython,localhost:50051,,0,20", "", 0, 20*time.Second),
				plugin(2, "R,localhost:50053,,,", "", 0, 20*time.Second),
				plugin(3, "Julia,localhost:50054,,15", "", 15*time.Second, 20*time.Second),
			},
		},
		{
			name: "Windows path with spaces and both timeouts",
			text: "[Settings 7]\nSSEPlugin=SSEPython,localhost:50051," + python + ",30,10;R,localhost:50053,C:\\certs\\r\n",
			want: []config.SSEPlugin{
				plugin(1, "SSEPython,localhost:50051,"+python+",30,10", python, 30*time.Second, 10*time.Second),
				plugin(2, `R,localhost:50053,C:\certs\r`, `C:\certs\r`, 0, 20*time.Second),
			},
		},
		{
			name: "reconnect timeout of zero",
			text: "[Settings 7]\nSSEPlugin=R,localhost:50053,,0,0\n",
			want: []config.SSEPlugin{
				plugin(1, "R,localhost:50053,,0,0", "", 0, 0),
			},
		},
		{
			name: "spaces around fields and empty entries",
			text: "[Settings 7]\n  SSEPlugin = SSEPython , localhost:50051 ;; R,localhost:50053 ;\n",
			want: []config.SSEPlugin{
				plugin(1, "SSEPython,localhost:50051", "", 0, 20*time.Second),
				plugin(2, "R,localhost:50053", "", 0, 20*time.Second),
			},
		},
		{
			name: "IPv6 address and host name",
			text: "[Settings 7]\nSSEPlugin=R,[::1]:50053;SSEPython,sse-python.example.com:50051\n",
			want: []config.SSEPlugin{
				plugin(1, "R,[::1]:50053", "", 0, 20*time.Second),
				plugin(2, "SSEPython,sse-python.example.com:50051", "", 0, 20*time.Second),
			},
		},
		{
			name: "CRLF line ends",
			text: "[Settings 7]\r\nLanguage=1033\r\nSSEPlugin=R,localhost:50053,,5\r\nUseLocalTime=1\r\n",
			want: []config.SSEPlugin{
				plugin(1, "R,localhost:50053,,5", "", 5*time.Second, 20*time.Second),
			},
		},
		{
			name: "section and key in other case",
			text: "[settings 7]\nsseplugin=R,localhost:50053\n",
			want: []config.SSEPlugin{
				plugin(1, "R,localhost:50053", "", 0, 20*time.Second),
			},
		},
		{
			// Before the fix, the quotes became part of the first engine's
			// name and of the last entry's port.
			name: "value in double quotes",
			text: "[Settings 7]\nSSEPlugin=\"SSEPython,localhost:50051,C:\\certs\\py;R,localhost:50056\"\n",
			want: []config.SSEPlugin{
				plugin(1, `SSEPython,localhost:50051,C:\certs\py`, `C:\certs\py`, 0, 20*time.Second),
				plugin(2, "R,localhost:50056", "", 0, 20*time.Second),
			},
		},
		{
			name: "value in single quotes with spaces around",
			text: "[Settings 7]\nSSEPlugin=  'R,localhost:50053'  \n",
			want: []config.SSEPlugin{
				plugin(1, "R,localhost:50053", "", 0, 20*time.Second),
			},
		},
		{
			// Before the fix, the quotes became part of the folder's name.
			name: "certificate folder in double quotes",
			text: "[Settings 7]\nSSEPlugin=SSEPython,localhost:50051,\"" + python + "\",0,20\n",
			want: []config.SSEPlugin{
				plugin(1, `SSEPython,localhost:50051,"`+python+`",0,20`, python, 0, 20*time.Second),
			},
		},
		{
			name: "quoted value with a quoted certificate folder",
			text: "[Settings 7]\nSSEPlugin=\"SSEPython,localhost:50051,\"" + python + "\"\"\n",
			want: []config.SSEPlugin{
				plugin(1, `SSEPython,localhost:50051,"`+python+`"`, python, 0, 20*time.Second),
			},
		},
		{
			// A single quote may occur in a Windows file name, so a folder
			// in single quotes is kept as written.
			name: "certificate folder in single quotes kept",
			text: "[Settings 7]\nSSEPlugin=R,localhost:50053,'C:\\certs\\r'\n",
			want: []config.SSEPlugin{
				plugin(1, `R,localhost:50053,'C:\certs\r'`, `'C:\certs\r'`, 0, 20*time.Second),
			},
		},
		{
			name: "quotes that do not match kept",
			text: "[Settings 7]\nSSEPlugin=R,localhost:50053,\"C:\\certs\\r'\n",
			want: []config.SSEPlugin{
				plugin(1, `R,localhost:50053,"C:\certs\r'`, `"C:\certs\r'`, 0, 20*time.Second),
			},
		},
		{
			// Only the pattern of UTF-16 without a byte order mark is
			// rejected, not any NUL byte.
			name: "NUL bytes after the text",
			text: "[Settings 7]\nSSEPlugin=R,localhost:50053\n\x00\x00\x00\x00",
			want: []config.SSEPlugin{
				plugin(1, "R,localhost:50053", "", 0, 20*time.Second),
			},
		},
		{
			name: "lines in other sections and comments ignored",
			text: "SSEPlugin=Before,localhost:50049\n[Settings 6]\nSSEPlugin=Older,localhost:50048\n[Settings 7]\n;SSEPlugin=Commented,localhost:50047\nSSEPlugin=R,localhost:50053\n[Recent Files]\nSSEPlugin=After,localhost:50046\n",
			want: []config.SSEPlugin{
				plugin(1, "R,localhost:50053", "", 0, 20*time.Second),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plugins, problems, err := config.ReadSSEPlugins([]byte(tt.text))
			if err != nil {
				t.Fatalf("ReadSSEPlugins(%q) error = %v, want nil", tt.text, err)
			}
			checkEntryProblems(t, problems, nil)
			if diff := cmp.Diff(tt.want, plugins); diff != "" {
				t.Errorf("ReadSSEPlugins(%q) plugins (-want +got):\n%s", tt.text, diff)
			}
		})
	}
}

// TestReadSSEPluginsIgnoredLines checks that only the first SSEPlugin
// line of the first [Settings 7] section is read, as Windows reads it,
// and that each other one is reported with its line number and the fix.
// Before the fix, the last line won and the others were dropped without
// a word.
func TestReadSSEPluginsIgnoredLines(t *testing.T) {
	type ignoredLine struct {
		line   int
		text   string
		reason string // in the problem
	}
	tests := []struct {
		name        string
		text        string
		wantPlugins []config.SSEPlugin
		wantIgnored []ignoredLine
	}{
		{
			name:        "first of two lines wins",
			text:        "[Settings 7]\nSSEPlugin=Old,localhost:50050\nLanguage=1033\nSSEPlugin=SSEPython,localhost:50051;R,localhost:50053\n",
			wantPlugins: []config.SSEPlugin{plugin(1, "Old,localhost:50050", "", 0, 20*time.Second)},
			wantIgnored: []ignoredLine{{
				line:   4,
				text:   "SSEPlugin=SSEPython,localhost:50051;R,localhost:50053",
				reason: "line 2 sets SSEPlugin earlier in [Settings 7], and Windows reads only the first; delete line 4, or move its entries into line 2",
			}},
		},
		{
			name:        "three lines in other case and CRLF",
			text:        "[Settings 7]\r\nSSEPlugin=R,localhost:50053\r\n  sseplugin = Py,localhost:50051\r\nSSEPLUGIN=\r\n",
			wantPlugins: []config.SSEPlugin{plugin(1, "R,localhost:50053", "", 0, 20*time.Second)},
			wantIgnored: []ignoredLine{
				{line: 3, text: "sseplugin = Py,localhost:50051", reason: "delete line 3, or move its entries into line 2"},
				{line: 4, text: "SSEPLUGIN=", reason: "delete line 4, or move its entries into line 2"},
			},
		},
		{
			name:        "line under a repeated section",
			text:        "[Settings 7]\nSSEPlugin=R,localhost:50053\n[Recent Files]\nFile1=a.qvw\n[settings 7]\nSSEPlugin=Py,localhost:50051\n",
			wantPlugins: []config.SSEPlugin{plugin(1, "R,localhost:50053", "", 0, 20*time.Second)},
			wantIgnored: []ignoredLine{{
				line:   6,
				text:   "SSEPlugin=Py,localhost:50051",
				reason: "[Settings 7] starts again above it, and Windows reads only the first [Settings 7], at line 1; move the line's entries there",
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plugins, problems, err := config.ReadSSEPlugins([]byte(tt.text))
			if err != nil {
				t.Fatalf("ReadSSEPlugins(%q) error = %v, want nil", tt.text, err)
			}
			if diff := cmp.Diff(tt.wantPlugins, plugins); diff != "" {
				t.Errorf("ReadSSEPlugins(%q) plugins (-want +got):\n%s", tt.text, diff)
			}
			if len(problems) != len(tt.wantIgnored) {
				t.Fatalf("ReadSSEPlugins(%q) problems = %q, want %d ignored lines", tt.text, problems, len(tt.wantIgnored))
			}
			for i, want := range tt.wantIgnored {
				ignored, ok := errors.AsType[*config.IgnoredLineError](problems[i])
				if !ok {
					t.Errorf("ReadSSEPlugins(%q) problem %d = %v, want an *IgnoredLineError", tt.text, i, problems[i])
					continue
				}
				if ignored.Line != want.line {
					t.Errorf("ReadSSEPlugins(%q) problem %d line = %d, want %d", tt.text, i, ignored.Line, want.line)
				}
				if ignored.Text != want.text {
					t.Errorf("ReadSSEPlugins(%q) problem %d text = %q, want %q", tt.text, i, ignored.Text, want.text)
				}
				if !strings.Contains(ignored.Reason, want.reason) {
					t.Errorf("ReadSSEPlugins(%q) problem %d reason = %q, want it to contain %q", tt.text, i, ignored.Reason, want.reason)
				}
			}
		})
	}

	t.Run("message", func(t *testing.T) {
		_, problems, _ := config.ReadSSEPlugins([]byte("[Settings 7]\nSSEPlugin=A,localhost:50051\nSSEPlugin=B,localhost:50052\n"))
		want := `ignored line 3 ("SSEPlugin=B,localhost:50052"): line 2 sets SSEPlugin earlier in [Settings 7], and Windows reads only the first; delete line 3, or move its entries into line 2`
		if len(problems) != 1 || problems[0].Error() != want {
			t.Errorf("ReadSSEPlugins(two lines) problems = %q, want [%q]", problems, want)
		}
	})

	t.Run("before entry errors", func(t *testing.T) {
		_, problems, _ := config.ReadSSEPlugins([]byte("[Settings 7]\nSSEPlugin=A,localhost:port\nSSEPlugin=B,localhost:50052\n"))
		checkEntryProblems(t, problems, []entryProblem{
			{prefix: `ignored line 3 ("SSEPlugin=B,localhost:50052"): `, text: "Windows reads only the first"},
			{prefix: `entry 1 ("A,localhost:port"): `, text: "invalid port"},
		})
	})
}

// TestReadSSEPluginsEntryErrors checks that a malformed entry is reported
// with its position and the reason, while the entries before and after it
// are still read.
func TestReadSSEPluginsEntryErrors(t *testing.T) {
	tests := []struct {
		name string
		bad  string
		text string // in the problem
	}{
		{name: "port not a number", bad: "R,localhost:port", text: `invalid port in "localhost:port"`},
		{name: "port out of range", bad: "R,localhost:70000", text: `invalid port in "localhost:70000"`},
		{name: "port zero", bad: "R,localhost:0", text: `invalid port in "localhost:0"`},
		{name: "address missing", bad: "R", text: "needs at least <EngineName>,<Host>:<Port>"},
		{name: "address empty", bad: "R,", text: `invalid address ""`},
		{name: "host missing", bad: "R,:50053", text: `invalid address ":50053"`},
		{name: "port missing", bad: "R,localhost", text: `invalid address "localhost"`},
		{name: "request timeout not a number", bad: "R,localhost:50053,,soon", text: `request timeout "soon"`},
		{name: "request timeout negative", bad: "R,localhost:50053,,-5", text: `request timeout "-5"`},
		{name: "request timeout with a fraction", bad: "R,localhost:50053,,1.5", text: `request timeout "1.5"`},
		{name: "request timeout over 292 years", bad: "R,localhost:50053,,9999999999999", text: `request timeout "9999999999999"`},
		{name: "reconnect timeout over 292 years", bad: "R,localhost:50053,,30,9999999999999", text: `reconnect timeout "9999999999999"`},
		{name: "reconnect timeout not a number", bad: "R,localhost:50053,,0,20s", text: `reconnect timeout "20s"`},
		{name: "too many fields", bad: "R,localhost:50053,,0,20,extra", text: "has 6 fields, at most 5"},
		{name: "engine name with a hyphen", bad: "SSE-R,localhost:50053", text: `engine name "SSE-R"`},
		{name: "engine name starting with a digit", bad: "1R,localhost:50053", text: `engine name "1R"`},
		{name: "engine name empty", bad: ",localhost:50053", text: `engine name ""`},
		{name: "duplicate name", bad: "SSEPython,localhost:50052", text: "engine name SSEPython is also entry 1"},
		{name: "duplicate name in other case", bad: "ssepython,localhost:50052", text: "engine name ssepython is also entry 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := "[Settings 7]\nSSEPlugin=SSEPython,localhost:50051;" + tt.bad + ";Julia,localhost:50054,,0,20\n"
			plugins, problems, err := config.ReadSSEPlugins([]byte(text))
			if err != nil {
				t.Fatalf("ReadSSEPlugins(%q) error = %v, want nil", text, err)
			}
			checkEntryProblems(t, problems, []entryProblem{{prefix: `entry 2 ("` + tt.bad + `"): `, text: tt.text}})
			want := []config.SSEPlugin{
				plugin(1, "SSEPython,localhost:50051", "", 0, 20*time.Second),
				plugin(3, "Julia,localhost:50054,,0,20", "", 0, 20*time.Second),
			}
			if diff := cmp.Diff(want, plugins); diff != "" {
				t.Errorf("ReadSSEPlugins(%q) plugins (-want +got):\n%s", text, diff)
			}
		})
	}
}

// TestReadSSEPluginsErrorsFile checks a sample file with one malformed
// entry of each kind between two good ones: every problem is reported in
// the order of the line, and the good entries keep their positions.
func TestReadSSEPluginsErrorsFile(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "settings", "entry-errors.ini"))
	if err != nil {
		t.Fatal(err)
	}
	plugins, problems, err := config.ReadSSEPlugins(data)
	if err != nil {
		t.Fatalf("ReadSSEPlugins(entry-errors.ini) error = %v, want nil", err)
	}
	checkEntryProblems(t, problems, []entryProblem{
		{prefix: `entry 2 ("R,localhost:port"): `, text: "invalid port"},
		{prefix: `entry 3 ("Julia"): `, text: "needs at least"},
		{prefix: `entry 4 ("Py2,localhost:50055,,soon"): `, text: `request timeout "soon"`},
		{prefix: `entry 5 ("Many,localhost:50058,,0,20,extra"): `, text: "has 6 fields"},
		{prefix: `entry 6 ("SSE-Py,localhost:50059"): `, text: `engine name "SSE-Py"`},
		{prefix: `entry 7 ("ssepython,localhost:50056"): `, text: "also entry 1"},
	})
	want := []config.SSEPlugin{
		plugin(1, "SSEPython,localhost:50051", "", 0, 20*time.Second),
		plugin(8, "Octave,localhost:50057,,0,20", "", 0, 20*time.Second),
	}
	if diff := cmp.Diff(want, plugins); diff != "" {
		t.Errorf("ReadSSEPlugins(entry-errors.ini) plugins (-want +got):\n%s", diff)
	}
}

// TestReadSSEPluginsNotFound checks that a file without an SSEPlugin line
// under [Settings 7] gives ErrNoSSEPlugin, wherever else the key is.
func TestReadSSEPluginsNotFound(t *testing.T) {
	tests := []struct {
		name   string
		text   string
		detail string // in the error, after ErrNoSSEPlugin's text
	}{
		{name: "empty file", text: ""},
		{name: "no Settings 7 section", text: "[Settings 6]\nLanguage=1033\n"},
		{name: "key in another section only", text: "[Settings 7]\nLanguage=1033\n[Settings 8]\nSSEPlugin=R,localhost:50053\n"},
		{name: "key before any section", text: "SSEPlugin=R,localhost:50053\n[Settings 7]\nLanguage=1033\n"},
		{name: "key commented out", text: "[Settings 7]\n;SSEPlugin=R,localhost:50053\n"},
		{name: "key with a prefix", text: "[Settings 7]\nOldSSEPlugin=R,localhost:50053\n"},
		{
			// Windows reads only the first [Settings 7].
			name:   "key only under a repeated section",
			text:   "[Settings 7]\nLanguage=1033\n[Settings 7]\nSSEPlugin=R,localhost:50053\n",
			detail: `ignored line 4 ("SSEPlugin=R,localhost:50053"): [Settings 7] starts again above it, and Windows reads only the first [Settings 7], at line 1; move the line's entries there`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plugins, problems, err := config.ReadSSEPlugins([]byte(tt.text))
			if !errors.Is(err, config.ErrNoSSEPlugin) {
				t.Errorf("ReadSSEPlugins(%q) error = %v, want %v", tt.text, err, config.ErrNoSSEPlugin)
			}
			if want := config.ErrNoSSEPlugin.Error() + "; " + tt.detail; tt.detail != "" && (err == nil || err.Error() != want) {
				t.Errorf("ReadSSEPlugins(%q) error = %v, want %q", tt.text, err, want)
			}
			if len(plugins) != 0 {
				t.Errorf("ReadSSEPlugins(%q) plugins = %v, want none", tt.text, plugins)
			}
			if len(problems) != 0 {
				t.Errorf("ReadSSEPlugins(%q) problems = %q, want none", tt.text, problems)
			}
		})
	}
}

// encodeUTF16 returns text as UTF-16 with a byte order mark, big-endian or
// little-endian.
func encodeUTF16(text string, order binary.AppendByteOrder) []byte {
	units := utf16.Encode([]rune("\ufeff" + text))
	data := make([]byte, 0, 2*len(units))
	for _, unit := range units {
		data = order.AppendUint16(data, unit)
	}
	return data
}

// TestReadSSEPluginsEncodings checks that the same Settings.ini reads
// alike in each encoding QlikView and text editors write: UTF-8 with and
// without a byte order mark, and UTF-16 in either byte order, each with
// CRLF and LF line ends. Non-ASCII text, one character outside the Basic
// Multilingual Plane among it, must come through intact.
func TestReadSSEPluginsEncodings(t *testing.T) {
	const folder = `C:\Users\Jürgen Groß\Qlik certs\r`
	lines := []string{
		"[Settings 7]",
		"Language=1031",
		"LastTitle=Umsatz 📈 Übersicht",
		"SSEPlugin=SSEPython,localhost:50051;R,localhost:50053," + folder + ",60",
		"[Recent Files]",
		"File1=C:\\Users\\Jürgen Groß\\Umsatz.qvw",
	}
	want := []config.SSEPlugin{
		plugin(1, "SSEPython,localhost:50051", "", 0, 20*time.Second),
		plugin(2, "R,localhost:50053,"+folder+",60", folder, 60*time.Second, 20*time.Second),
	}
	encodings := []struct {
		name   string
		encode func(string) []byte
	}{
		{"UTF-8", func(text string) []byte { return []byte(text) }},
		{"UTF-8 with BOM", func(text string) []byte { return append([]byte{0xef, 0xbb, 0xbf}, text...) }},
		{"UTF-16 LE with BOM", func(text string) []byte { return encodeUTF16(text, binary.LittleEndian) }},
		{"UTF-16 BE with BOM", func(text string) []byte { return encodeUTF16(text, binary.BigEndian) }},
	}
	for _, encoding := range encodings {
		for _, lineEnd := range []struct{ name, text string }{{"CRLF", "\r\n"}, {"LF", "\n"}} {
			t.Run(encoding.name+" "+lineEnd.name, func(t *testing.T) {
				data := encoding.encode(strings.Join(lines, lineEnd.text) + lineEnd.text)
				plugins, problems, err := config.ReadSSEPlugins(data)
				if err != nil {
					t.Fatalf("ReadSSEPlugins() error = %v, want nil", err)
				}
				checkEntryProblems(t, problems, nil)
				if diff := cmp.Diff(want, plugins); diff != "" {
					t.Errorf("ReadSSEPlugins() plugins (-want +got):\n%s", diff)
				}
			})
		}
	}

	// Before the fix, such a file gave ErrNoSSEPlugin, though the line
	// is in it.
	for _, encoding := range []struct {
		name  string
		order binary.AppendByteOrder
	}{{"UTF-16 LE", binary.LittleEndian}, {"UTF-16 BE", binary.BigEndian}} {
		t.Run(encoding.name+" without BOM", func(t *testing.T) {
			data := encodeUTF16(strings.Join(lines, "\r\n")+"\r\n", encoding.order)[2:]
			plugins, _, err := config.ReadSSEPlugins(data)
			want := "reading Settings.ini: the file looks like " + encoding.name + " text without a byte order mark, as NUL bytes alternate with ASCII characters; save it as UTF-8, or as UTF-16 with a byte order mark as QlikView writes it, and import again"
			if err == nil || err.Error() != want {
				t.Errorf("ReadSSEPlugins(%s without BOM) error = %v, want %q", encoding.name, err, want)
			}
			if errors.Is(err, config.ErrNoSSEPlugin) {
				t.Errorf("ReadSSEPlugins(%s without BOM) error = %v, want one about the encoding rather than %v", encoding.name, err, config.ErrNoSSEPlugin)
			}
			if len(plugins) != 0 {
				t.Errorf("ReadSSEPlugins(%s without BOM) plugins = %v, want none", encoding.name, plugins)
			}
		})
	}

	t.Run("UTF-16 with an odd number of bytes", func(t *testing.T) {
		data := append(encodeUTF16(lines[0]+"\r\n"+lines[3]+"\r\n", binary.LittleEndian), 0x0a)
		_, _, err := config.ReadSSEPlugins(data)
		if err == nil || !strings.Contains(err.Error(), "odd number of bytes") {
			t.Errorf("ReadSSEPlugins(odd UTF-16) error = %v, want one about an odd number of bytes", err)
		}
		if errors.Is(err, config.ErrNoSSEPlugin) {
			t.Errorf("ReadSSEPlugins(odd UTF-16) error = %v, want a decoding error rather than %v", err, config.ErrNoSSEPlugin)
		}
	})
}

// TestReadSSEPluginsSampleFile checks the sample QlikView Settings.ini,
// stored as QlikView writes it: UTF-16 LE with a byte order mark and CRLF
// line ends.
func TestReadSSEPluginsSampleFile(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "settings", "qlikview-utf16le-crlf.ini"))
	if err != nil {
		t.Fatal(err)
	}
	plugins, problems, err := config.ReadSSEPlugins(data)
	if err != nil {
		t.Fatalf("ReadSSEPlugins(qlikview-utf16le-crlf.ini) error = %v, want nil", err)
	}
	checkEntryProblems(t, problems, nil)
	const python = `C:\Program Files\Qlik\certs\python`
	want := []config.SSEPlugin{
		plugin(1, "SSEPython,localhost:50051,"+python+",30,10", python, 30*time.Second, 10*time.Second),
		plugin(2, "R,localhost:50053", "", 0, 20*time.Second),
	}
	if diff := cmp.Diff(want, plugins); diff != "" {
		t.Errorf("ReadSSEPlugins(qlikview-utf16le-crlf.ini) plugins (-want +got):\n%s", diff)
	}
}

// readPlugins returns the entries of an SSEPlugin line, failing the test
// on any problem.
func readPlugins(t *testing.T, line string) []config.SSEPlugin {
	t.Helper()
	plugins, problems, err := config.ReadSSEPlugins([]byte("[Settings 7]\nSSEPlugin=" + line + "\n"))
	if err != nil || len(problems) > 0 {
		t.Fatalf("ReadSSEPlugins(%q) = %v, %q, want no error and no problems", line, err, problems)
	}
	return plugins
}

// duration returns a pointer to d, as config.Engine.ReconnectBuffer takes
// it.
func duration(d time.Duration) *time.Duration {
	return &d
}

// TestGatewayForPlugins checks the gateway configuration and the new
// SSEPlugin line made from Settings.ini entries. Ports mode gives one
// listener per engine and skips the ports of plugins on the gateway's
// host. Hosts mode gives one listener and a host name per engine. Both
// keep each engine's backend, TLS folder, request timeout and reconnect
// buffer.
func TestGatewayForPlugins(t *testing.T) {
	const (
		gatewayDir = "certs/gateway"
		qlikDir    = `C:\ProgramData\ssegw\qlik`
		python     = `C:\Program Files\Qlik\certs\python`
	)
	serverTLS := &config.ServerTLS{Dir: gatewayDir}
	tests := []struct {
		name          string
		line          string
		opts          config.GatewayOptions
		wantListeners []config.Listener
		wantEngines   map[string]*config.Engine
		wantLine      string
	}{
		{
			name: "ports skip local plugins",
			line: "SSEPython,localhost:50051," + python + ",30,10;R,localhost:50053",
			opts: config.GatewayOptions{Mode: "ports", ListenHost: "0.0.0.0", BasePort: 50051, GatewayHost: "gw.example", TLSDir: gatewayDir, QlikCertFolder: qlikDir},
			wantListeners: []config.Listener{
				{Address: "0.0.0.0:50052", Engine: "SSEPython", TLS: serverTLS},
				{Address: "0.0.0.0:50054", Engine: "R", TLS: serverTLS},
			},
			wantEngines: map[string]*config.Engine{
				"SSEPython": {
					RequestTimeout:  30 * time.Second,
					ReconnectBuffer: duration(10 * time.Second),
					Backends:        []config.Backend{{Address: "localhost:50051", TLS: &config.ClientTLS{Dir: python}}},
				},
				"R": {
					ReconnectBuffer: duration(20 * time.Second),
					Backends:        []config.Backend{{Address: "localhost:50053"}},
				},
			},
			wantLine: `SSEPlugin=SSEPython,gw.example:50052,` + qlikDir + `,30,10;R,gw.example:50054,` + qlikDir,
		},
		{
			name: "ports skip loopback addresses of either family",
			line: "SSEPython,127.0.0.1:50052;R,[::1]:50051,,0,0",
			opts: config.GatewayOptions{Mode: "ports", ListenHost: "0.0.0.0", BasePort: 50051, GatewayHost: "gw.example", TLSDir: gatewayDir, QlikCertFolder: qlikDir},
			wantListeners: []config.Listener{
				{Address: "0.0.0.0:50053", Engine: "SSEPython", TLS: serverTLS},
				{Address: "0.0.0.0:50054", Engine: "R", TLS: serverTLS},
			},
			wantEngines: map[string]*config.Engine{
				"SSEPython": {ReconnectBuffer: duration(20 * time.Second), Backends: []config.Backend{{Address: "127.0.0.1:50052"}}},
				"R":         {ReconnectBuffer: duration(0), Backends: []config.Backend{{Address: "[::1]:50051"}}},
			},
			wantLine: `SSEPlugin=SSEPython,gw.example:50053,` + qlikDir + `;R,gw.example:50054,` + qlikDir + `,0,0`,
		},
		{
			name: "ports keep the ports of remote plugins",
			line: "SSEPython,sse-python.example.com:50051;R,sse-r.example.com:50052",
			opts: config.GatewayOptions{Mode: "ports", ListenHost: "127.0.0.1", BasePort: 50051, GatewayHost: "gw.example", TLSDir: gatewayDir, QlikCertFolder: qlikDir},
			wantListeners: []config.Listener{
				{Address: "127.0.0.1:50051", Engine: "SSEPython", TLS: serverTLS},
				{Address: "127.0.0.1:50052", Engine: "R", TLS: serverTLS},
			},
			wantEngines: map[string]*config.Engine{
				"SSEPython": {ReconnectBuffer: duration(20 * time.Second), Backends: []config.Backend{{Address: "sse-python.example.com:50051"}}},
				"R":         {ReconnectBuffer: duration(20 * time.Second), Backends: []config.Backend{{Address: "sse-r.example.com:50052"}}},
			},
			wantLine: `SSEPlugin=SSEPython,gw.example:50051,` + qlikDir + `;R,gw.example:50052,` + qlikDir,
		},
		{
			// A plugin addressed by the gateway's own host name runs on
			// the gateway's host, so the gateway cannot listen on its port.
			name: "ports skip plugins on the gateway host by name",
			line: "SSEPython,GW.example:50051;R,localhost:50053",
			opts: config.GatewayOptions{Mode: "ports", ListenHost: "0.0.0.0", BasePort: 50051, GatewayHost: "gw.example", TLSDir: gatewayDir, QlikCertFolder: qlikDir},
			wantListeners: []config.Listener{
				{Address: "0.0.0.0:50052", Engine: "SSEPython", TLS: serverTLS},
				{Address: "0.0.0.0:50054", Engine: "R", TLS: serverTLS},
			},
			wantEngines: map[string]*config.Engine{
				"SSEPython": {ReconnectBuffer: duration(20 * time.Second), Backends: []config.Backend{{Address: "GW.example:50051"}}},
				"R":         {ReconnectBuffer: duration(20 * time.Second), Backends: []config.Backend{{Address: "localhost:50053"}}},
			},
			wantLine: `SSEPlugin=SSEPython,gw.example:50052,` + qlikDir + `;R,gw.example:50054,` + qlikDir,
		},
		{
			// Names of the machine that runs the import, other than the
			// one Qlik uses for the gateway, lead there too.
			name: "ports skip plugins on the gateway host by its other names",
			line: "A,192.0.2.2:50051;B,VM.:50052;C,vm:50053;D,127.0.0.2:50055;E,192.0.2.3:50056",
			opts: config.GatewayOptions{Mode: "ports", ListenHost: "0.0.0.0", BasePort: 50051, GatewayHost: "gw.example", TLSDir: gatewayDir, QlikCertFolder: qlikDir,
				LocalHosts: []string{"vm", "192.0.2.2"}},
			wantListeners: []config.Listener{
				{Address: "0.0.0.0:50054", Engine: "A", TLS: serverTLS},
				{Address: "0.0.0.0:50056", Engine: "B", TLS: serverTLS},
				{Address: "0.0.0.0:50057", Engine: "C", TLS: serverTLS},
				{Address: "0.0.0.0:50058", Engine: "D", TLS: serverTLS},
				{Address: "0.0.0.0:50059", Engine: "E", TLS: serverTLS},
			},
			wantEngines: map[string]*config.Engine{
				"A": {ReconnectBuffer: duration(20 * time.Second), Backends: []config.Backend{{Address: "192.0.2.2:50051"}}},
				"B": {ReconnectBuffer: duration(20 * time.Second), Backends: []config.Backend{{Address: "VM.:50052"}}},
				"C": {ReconnectBuffer: duration(20 * time.Second), Backends: []config.Backend{{Address: "vm:50053"}}},
				"D": {ReconnectBuffer: duration(20 * time.Second), Backends: []config.Backend{{Address: "127.0.0.2:50055"}}},
				"E": {ReconnectBuffer: duration(20 * time.Second), Backends: []config.Backend{{Address: "192.0.2.3:50056"}}},
			},
			wantLine: `SSEPlugin=A,gw.example:50054,` + qlikDir + `;B,gw.example:50056,` + qlikDir + `;C,gw.example:50057,` + qlikDir +
				`;D,gw.example:50058,` + qlikDir + `;E,gw.example:50059,` + qlikDir,
		},
		{
			name: "hosts share one listener",
			line: "SSEPython,localhost:50051," + python + ",30,10;R,localhost:50053",
			opts: config.GatewayOptions{Mode: "hosts", ListenHost: "0.0.0.0", BasePort: 50051, GatewayHost: "gw.example", TLSDir: gatewayDir, QlikCertFolder: qlikDir},
			wantListeners: []config.Listener{
				{Address: "0.0.0.0:50052", TLS: serverTLS},
			},
			wantEngines: map[string]*config.Engine{
				"SSEPython": {
					Hosts:           []string{"ssepython.gw.example"},
					RequestTimeout:  30 * time.Second,
					ReconnectBuffer: duration(10 * time.Second),
					Backends:        []config.Backend{{Address: "localhost:50051", TLS: &config.ClientTLS{Dir: python}}},
				},
				"R": {
					Hosts:           []string{"r.gw.example"},
					ReconnectBuffer: duration(20 * time.Second),
					Backends:        []config.Backend{{Address: "localhost:50053"}},
				},
			},
			wantLine: `SSEPlugin=SSEPython,ssepython.gw.example:50052,` + qlikDir + `,30,10;R,r.gw.example:50052,` + qlikDir,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, line, err := config.GatewayForPlugins(readPlugins(t, tt.line), tt.opts)
			if err != nil {
				t.Fatalf("GatewayForPlugins(%q) error = %v, want nil", tt.line, err)
			}
			if diff := cmp.Diff(tt.wantListeners, cfg.Listeners); diff != "" {
				t.Errorf("GatewayForPlugins(%q) listeners (-want +got):\n%s", tt.line, diff)
			}
			// Name is left to the next check: a Config built in code may
			// leave it empty and take its engines' names from their keys.
			if diff := cmp.Diff(tt.wantEngines, cfg.Engines, cmpopts.IgnoreFields(config.Engine{}, "Name")); diff != "" {
				t.Errorf("GatewayForPlugins(%q) engines (-want +got):\n%s", tt.line, diff)
			}
			for _, name := range cfg.EngineNames() {
				if engine, ok := cfg.Engines[name]; !ok || cfg.Engine(name) != engine {
					t.Errorf("GatewayForPlugins(%q).Engine(%q) = %p, want engines[%q] = %p", tt.line, name, cfg.Engine(name), name, engine)
				}
			}
			if line != tt.wantLine {
				t.Errorf("GatewayForPlugins(%q) line = %q, want %q", tt.line, line, tt.wantLine)
			}
		})
	}

	t.Run("Qlik folder that breaks the line", func(t *testing.T) {
		for _, folder := range []string{`C:\certs;old`, `C:\certs,old`, "C:\\certs\r\nold"} {
			opts := config.GatewayOptions{Mode: "ports", ListenHost: "0.0.0.0", BasePort: 50051, GatewayHost: "gw.example", TLSDir: gatewayDir, QlikCertFolder: folder}
			_, line, err := config.GatewayForPlugins(readPlugins(t, "SSEPython,localhost:50051;R,localhost:50053"), opts)
			if err == nil {
				t.Errorf("GatewayForPlugins(QlikCertFolder %q) line = %q, error = nil; want an error", folder, line)
			} else if !strings.Contains(err.Error(), fmt.Sprintf("certificate folder for Qlik %q", folder)) {
				t.Errorf("GatewayForPlugins(QlikCertFolder %q) error = %v, want one naming the folder", folder, err)
			}
		}
	})

	t.Run("empty folders", func(t *testing.T) {
		plugins := readPlugins(t, "SSEPython,localhost:50051")
		opts := config.GatewayOptions{Mode: "ports", ListenHost: "0.0.0.0", BasePort: 50051, GatewayHost: "gw.example", TLSDir: "", QlikCertFolder: qlikDir}
		if _, line, err := config.GatewayForPlugins(plugins, opts); err == nil || !strings.Contains(err.Error(), "the gateway's certificate folder is empty") {
			t.Errorf("GatewayForPlugins(TLSDir \"\") = %q, %v; want an error about the empty gateway folder", line, err)
		}
		opts.TLSDir, opts.QlikCertFolder = gatewayDir, ""
		if _, line, err := config.GatewayForPlugins(plugins, opts); err == nil || !strings.Contains(err.Error(), `certificate folder for Qlik "": is empty`) {
			t.Errorf("GatewayForPlugins(QlikCertFolder \"\") = %q, %v; want an error about the empty Qlik folder", line, err)
		}
	})

	t.Run("unknown mode", func(t *testing.T) {
		_, _, err := config.GatewayForPlugins(readPlugins(t, "R,localhost:50053"), config.GatewayOptions{Mode: "port", BasePort: 50051})
		if err == nil || !strings.Contains(err.Error(), `mode "port"`) {
			t.Errorf(`GatewayForPlugins(mode "port") error = %v, want one naming mode "port"`, err)
		}
	})
}
