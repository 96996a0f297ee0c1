package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"go.yaml.in/yaml/v3"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/tlsutil"
)

// Paths as they appear in the sample Settings.ini files and in the
// imported configurations.
const (
	samplePythonCerts = `C:\Program Files\Qlik\certs\python`
	sampleQlikCerts   = `C:\ProgramData\ssegw\qlik`
)

// runCommandOutput runs the ssegw command line in-process with args and
// returns what it printed to stdout and to stderr, apart, and its error.
// A panic in the command fails the test and is returned as the error, so
// that the other tests of the package still run.
func runCommandOutput(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := newRootCommand()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	defer func() {
		if recovered := recover(); recovered != nil {
			t.Errorf("ssegw %s panicked: %v\n%s", strings.Join(args, " "), recovered, debug.Stack())
			stdout, stderr, err = out.String(), errOut.String(), fmt.Errorf("panic: %v", recovered)
		}
	}()
	err = root.Execute()
	return out.String(), errOut.String(), err
}

// copySampleSettings copies a sample Settings.ini from testdata into a new
// temporary folder, dates it an hour back so that a write would show in
// its modification time, and returns its path.
func copySampleSettings(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "config", "testdata", "settings", name))
	if err != nil {
		t.Fatal(err)
	}
	return writeSampleSettings(t, data)
}

// writeSampleSettings writes data as Settings.ini into a new temporary
// folder, dated an hour back, and returns its path.
func writeSampleSettings(t *testing.T, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "Settings.ini")
	ssetest.WriteFile(t, path, data)
	past := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(path, past, past); err != nil {
		t.Fatal(err)
	}
	return path
}

// checkSettingsUnchanged records the content and modification time of
// path now, and fails the test if either differs when the test ends.
func checkSettingsUnchanged(t *testing.T, path string) {
	t.Helper()
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		after, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("reading %s after import-settings: %v", path, err)
			return
		}
		if !bytes.Equal(before, after) {
			t.Errorf("%s content changed by import-settings: %d bytes before, %d after", path, len(before), len(after))
		}
		afterInfo, err := os.Stat(path)
		if err != nil {
			t.Errorf("stat %s after import-settings: %v", path, err)
			return
		}
		if !afterInfo.ModTime().Equal(info.ModTime()) {
			t.Errorf("%s modification time = %v, want %v as before import-settings", path, afterInfo.ModTime(), info.ModTime())
		}
	})
}

// lineAfter returns the line of stdout that follows the line containing
// marker, or fails the test.
func lineAfter(t *testing.T, stdout, marker string) string {
	t.Helper()
	lines := strings.Split(stdout, "\n")
	for i, line := range lines {
		if strings.Contains(line, marker) && i+1 < len(lines) {
			return lines[i+1]
		}
	}
	t.Fatalf("output has no line containing %q followed by another:\n%s", marker, stdout)
	return ""
}

// writeQlikClientFolder creates dir with the files of Qlik's client layout,
// copied from the certificate set's qlik folder.
func writeQlikClientFolder(t *testing.T, certs *ssetest.Certs, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{tlsutil.RootCertFile, tlsutil.ClientCertFile, tlsutil.ClientKeyFile} {
		data, err := os.ReadFile(filepath.Join(certs.QlikDir, name))
		if err != nil {
			t.Fatal(err)
		}
		ssetest.WriteFile(t, filepath.Join(dir, name), data)
	}
}

// parseImportedConfig parses the configuration file at path with
// config.Parse from the file's folder, so that relative paths in it
// resolve there.
func parseImportedConfig(t *testing.T, path string) (*config.Config, error) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading the imported configuration: %v", err)
	}
	t.Chdir(filepath.Dir(path))
	return config.Parse(data, nil)
}

// TestImportSettingsPorts checks an import in ports mode of the sample
// QlikView Settings.ini, which is UTF-16 LE with CRLF and has a
// certificate folder with spaces. It checks the printed SSEPlugin line,
// and that the written configuration loads once the certificate folders
// it names exist. The configuration must have one listener per engine, on
// ports that the local plugins leave free.
func TestImportSettingsPorts(t *testing.T) {
	settings := copySampleSettings(t, "qlikview-utf16le-crlf.ini")
	checkSettingsUnchanged(t, settings)
	certs := ssetest.NewCerts(t)
	out := filepath.Join(t.TempDir(), "ssegw.yaml")

	stdout, stderr, err := runCommandOutput(t, "import-settings", settings, "--out", out, "--mode", "ports",
		"--listen", "0.0.0.0", "--base-port", "50051", "--gateway-host", "gw.example",
		"--gateway-certs", certs.GatewayDir, "--qlik-certs", sampleQlikCerts)
	if err != nil {
		t.Fatalf("import-settings error = %v, want nil\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	if stderr != "" {
		t.Errorf("import-settings stderr = %q, want nothing", stderr)
	}
	if want := "Wrote " + out + " with 2 engines (SSEPython, R).\n"; !strings.HasPrefix(stdout, want) {
		t.Errorf("import-settings stdout = %q, want it to start with %q", stdout, want)
	}
	wantLine := "SSEPlugin=SSEPython,gw.example:50052," + sampleQlikCerts + ",30,10;R,gw.example:50054," + sampleQlikCerts
	if got := lineAfter(t, stdout, "replace the SSEPlugin line with:"); got != wantLine {
		t.Errorf("import-settings printed SSEPlugin line = %q, want %q", got, wantLine)
	}

	// Until the plugin's certificate folder exists, it is the only problem.
	_, err = parseImportedConfig(t, out)
	wantProblem := "engines.SSEPython.backends[0].tls.dir: folder " + samplePythonCerts + " not found; give a client folder as Qlik uses for the plugin, or make one with ssegw certs init --ca"
	if err == nil || strings.TrimSpace(err.Error()) != wantProblem {
		t.Errorf("config.Parse(imported, no plugin certificates) error = %v, want only %q", err, wantProblem)
	}

	writeQlikClientFolder(t, certs, filepath.Join(filepath.Dir(out), samplePythonCerts))
	cfg, err := parseImportedConfig(t, out)
	if err != nil {
		t.Fatalf("config.Parse(imported) error:\n%v\nwant nil", err)
	}
	wantListeners := []config.Listener{
		{Address: "0.0.0.0:50052", Engine: "SSEPython", TLS: &config.ServerTLS{Dir: certs.GatewayDir}},
		{Address: "0.0.0.0:50054", Engine: "R", TLS: &config.ServerTLS{Dir: certs.GatewayDir}},
	}
	if got := len(cfg.Listeners); got != len(wantListeners) {
		t.Fatalf("imported listeners = %d, want %d", got, len(wantListeners))
	}
	for i, want := range wantListeners {
		got := cfg.Listeners[i]
		if got.Address != want.Address {
			t.Errorf("imported listeners[%d].address = %q, want %q", i, got.Address, want.Address)
		}
		if got.Engine != want.Engine {
			t.Errorf("imported listeners[%d].engine = %q, want %q", i, got.Engine, want.Engine)
		}
		if got.TLS == nil || got.TLS.Dir != want.TLS.Dir {
			t.Errorf("imported listeners[%d].tls = %+v, want dir %q", i, got.TLS, want.TLS.Dir)
		}
	}
	checkImportedEngine(t, cfg, importedEngine{name: "SSEPython", address: "localhost:50051", tlsDir: samplePythonCerts, requestTimeout: 30 * time.Second, reconnectBuffer: 10 * time.Second})
	checkImportedEngine(t, cfg, importedEngine{name: "R", address: "localhost:50053", reconnectBuffer: 20 * time.Second})
	if got, want := cfg.EngineNames(), []string{"R", "SSEPython"}; !slices.Equal(got, want) {
		t.Errorf("imported engines = %v, want %v", got, want)
	}
}

// importedEngine is what an imported engine must hold.
type importedEngine struct {
	name            string
	hosts           []string
	address         string
	tlsDir          string // relative to the configuration's folder; empty for plaintext
	requestTimeout  time.Duration
	reconnectBuffer time.Duration
}

// checkImportedEngine checks one engine of a parsed imported
// configuration.
func checkImportedEngine(t *testing.T, cfg *config.Config, want importedEngine) {
	t.Helper()
	engine := cfg.Engine(want.name)
	if engine == nil {
		t.Errorf("imported engine %s missing; engines: %v", want.name, cfg.EngineNames())
		return
	}
	if engine.Name != want.name {
		t.Errorf("imported engine %s name = %q, want %q", want.name, engine.Name, want.name)
	}
	if !slices.Equal(engine.Hosts, want.hosts) {
		t.Errorf("imported engines.%s.hosts = %q, want %q", want.name, engine.Hosts, want.hosts)
	}
	if len(engine.Backends) != 1 {
		t.Errorf("imported engines.%s.backends = %d, want 1", want.name, len(engine.Backends))
		return
	}
	backend := engine.Backends[0]
	if backend.Address != want.address {
		t.Errorf("imported engines.%s.backends[0].address = %q, want %q", want.name, backend.Address, want.address)
	}
	switch {
	case want.tlsDir == "" && backend.TLS != nil:
		t.Errorf("imported engines.%s.backends[0].tls = %+v, want none", want.name, backend.TLS)
	case want.tlsDir != "" && backend.TLS == nil:
		t.Errorf("imported engines.%s.backends[0].tls = nil, want dir %q", want.name, want.tlsDir)
	case want.tlsDir != "" && backend.TLS.Dir != want.tlsDir:
		t.Errorf("imported engines.%s.backends[0].tls.dir = %q, want %q", want.name, backend.TLS.Dir, want.tlsDir)
	}
	if engine.RequestTimeout != want.requestTimeout {
		t.Errorf("imported engines.%s.request_timeout = %v, want %v", want.name, engine.RequestTimeout, want.requestTimeout)
	}
	if engine.ReconnectBuffer == nil {
		t.Errorf("imported engines.%s.reconnect_buffer = nil, want %v", want.name, want.reconnectBuffer)
	} else if *engine.ReconnectBuffer != want.reconnectBuffer {
		t.Errorf("imported engines.%s.reconnect_buffer = %v, want %v", want.name, *engine.ReconnectBuffer, want.reconnectBuffer)
	}
}

// TestImportSettingsHosts checks an import in hosts mode: one listener
// without a default engine, a host name per engine in the configuration,
// in the printed SSEPlugin line and in the list of names to resolve.
func TestImportSettingsHosts(t *testing.T) {
	settings := copySampleSettings(t, "qlikview-utf16le-crlf.ini")
	checkSettingsUnchanged(t, settings)
	certs := ssetest.NewCerts(t)
	out := filepath.Join(t.TempDir(), "ssegw.yaml")

	stdout, stderr, err := runCommandOutput(t, "import-settings", settings, "--out", out, "--mode", "hosts",
		"--listen", "0.0.0.0", "--base-port", "50051", "--gateway-host", "sse.example.com",
		"--gateway-certs", certs.GatewayDir, "--qlik-certs", sampleQlikCerts)
	if err != nil {
		t.Fatalf("import-settings error = %v, want nil\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	if stderr != "" {
		t.Errorf("import-settings stderr = %q, want nothing", stderr)
	}
	wantLine := "SSEPlugin=SSEPython,ssepython.sse.example.com:50052," + sampleQlikCerts + ",30,10;R,r.sse.example.com:50052," + sampleQlikCerts
	if got := lineAfter(t, stdout, "replace the SSEPlugin line with:"); got != wantLine {
		t.Errorf("import-settings printed SSEPlugin line = %q, want %q", got, wantLine)
	}
	for _, host := range []string{"ssepython.sse.example.com", "r.sse.example.com"} {
		if !strings.Contains(stdout, "\n  "+host+"\n") {
			t.Errorf("import-settings stdout = %q, want host name %s listed on its own line", stdout, host)
		}
	}

	writeQlikClientFolder(t, certs, filepath.Join(filepath.Dir(out), samplePythonCerts))
	cfg, err := parseImportedConfig(t, out)
	if err != nil {
		t.Fatalf("config.Parse(imported) error:\n%v\nwant nil", err)
	}
	if len(cfg.Listeners) != 1 {
		t.Fatalf("imported listeners = %d %+v, want 1", len(cfg.Listeners), cfg.Listeners)
	}
	if got, want := cfg.Listeners[0].Address, "0.0.0.0:50052"; got != want {
		t.Errorf("imported listeners[0].address = %q, want %q", got, want)
	}
	if got := cfg.Listeners[0].Engine; got != "" {
		t.Errorf("imported listeners[0].engine = %q, want none, so that the host name chooses", got)
	}
	checkImportedEngine(t, cfg, importedEngine{name: "SSEPython", hosts: []string{"ssepython.sse.example.com"}, address: "localhost:50051", tlsDir: samplePythonCerts, requestTimeout: 30 * time.Second, reconnectBuffer: 10 * time.Second})
	checkImportedEngine(t, cfg, importedEngine{name: "R", hosts: []string{"r.sse.example.com"}, address: "localhost:50053", reconnectBuffer: 20 * time.Second})
}

// TestImportSettingsSkipsBadEntries checks that each malformed entry is
// reported on stderr with its position, that the good entries are
// imported all the same, and that the exit status is 1.
func TestImportSettingsSkipsBadEntries(t *testing.T) {
	settings := copySampleSettings(t, "entry-errors.ini")
	checkSettingsUnchanged(t, settings)
	certs := ssetest.NewCerts(t)
	out := filepath.Join(t.TempDir(), "ssegw.yaml")

	stdout, stderr, err := runCommandOutput(t, "import-settings", settings, "--out", out,
		"--listen", "127.0.0.1", "--base-port", "50051", "--gateway-host", "gw.example", "--gateway-certs", certs.GatewayDir)
	checkPartialImport(t, err)
	wantSkipped := []string{
		`skipped entry 2 ("R,localhost:port"): `,
		`skipped entry 3 ("Julia"): `,
		`skipped entry 4 ("Py2,localhost:50055,,soon"): `,
		`skipped entry 5 ("Many,localhost:50058,,0,20,extra"): `,
		`skipped entry 6 ("SSE-Py,localhost:50059"): `,
		`skipped entry 7 ("ssepython,localhost:50056"): `,
	}
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	if len(lines) != len(wantSkipped) {
		t.Errorf("import-settings stderr has %d lines, want %d:\n%s", len(lines), len(wantSkipped), stderr)
	}
	for i := 0; i < len(lines) && i < len(wantSkipped); i++ {
		if !strings.HasPrefix(lines[i], wantSkipped[i]) {
			t.Errorf("import-settings stderr line %d = %q, want it to start with %q", i, lines[i], wantSkipped[i])
		}
	}
	if want := "with 2 engines (SSEPython, Octave)."; !strings.Contains(stdout, want) {
		t.Errorf("import-settings stdout = %q, want it to contain %q", stdout, want)
	}

	cfg, err := parseImportedConfig(t, out)
	if err != nil {
		t.Fatalf("config.Parse(imported) error:\n%v\nwant nil", err)
	}
	if got, want := cfg.EngineNames(), []string{"Octave", "SSEPython"}; !slices.Equal(got, want) {
		t.Errorf("imported engines = %v, want %v", got, want)
	}
	checkImportedEngine(t, cfg, importedEngine{name: "SSEPython", address: "localhost:50051", reconnectBuffer: 20 * time.Second})
	checkImportedEngine(t, cfg, importedEngine{name: "Octave", address: "localhost:50057", reconnectBuffer: 20 * time.Second})
}

// TestImportSettingsEngineNamesLikeYAMLWords checks that engine names
// which YAML reads as booleans or null when unquoted, and which Qlik
// accepts, keep their names in the written configuration.
func TestImportSettingsEngineNamesLikeYAMLWords(t *testing.T) {
	settings := writeSampleSettings(t, []byte("[Settings 7]\r\nSSEPlugin=True,localhost:50061;Null,localhost:50063;FALSE,localhost:50065\r\n"))
	checkSettingsUnchanged(t, settings)
	certs := ssetest.NewCerts(t)
	out := filepath.Join(t.TempDir(), "ssegw.yaml")

	stdout, stderr, err := runCommandOutput(t, "import-settings", settings, "--out", out,
		"--listen", "127.0.0.1", "--base-port", "50051", "--gateway-host", "gw.example", "--gateway-certs", certs.GatewayDir)
	if err != nil {
		t.Fatalf("import-settings error = %v, want nil\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	cfg, err := parseImportedConfig(t, out)
	if err != nil {
		data, _ := os.ReadFile(out)
		t.Fatalf("config.Parse(imported) error:\n%v\nwant nil; file:\n%s", err, data)
	}
	if got, want := cfg.EngineNames(), []string{"FALSE", "Null", "True"}; !slices.Equal(got, want) {
		t.Errorf("imported engines = %v, want %v", got, want)
	}
	wantEngines := []string{"True", "Null", "FALSE"}
	if len(cfg.Listeners) != len(wantEngines) {
		t.Fatalf("imported listeners = %d, want %d", len(cfg.Listeners), len(wantEngines))
	}
	for i, want := range wantEngines {
		if got := cfg.Listeners[i].Engine; got != want {
			t.Errorf("imported listeners[%d].engine = %q, want %q", i, got, want)
		}
	}
}

// TestImportSettingsNeverOverwrites checks that an existing configuration
// file is kept unless --force is given, and replaced with it.
func TestImportSettingsNeverOverwrites(t *testing.T) {
	settings := copySampleSettings(t, "local-plaintext.ini")
	checkSettingsUnchanged(t, settings)
	out := filepath.Join(t.TempDir(), "ssegw.yaml")
	const existing = "# the administrator's own configuration\n"
	ssetest.WriteFile(t, out, []byte(existing))
	args := []string{"import-settings", settings, "--out", out, "--gateway-host", "gw.example"}

	stdout, stderr, err := runCommandOutput(t, args...)
	if err == nil {
		t.Errorf("import-settings onto an existing file error = nil, want one\nstdout:\n%s", stdout)
	} else if !strings.Contains(err.Error(), "--force") {
		t.Errorf("import-settings onto an existing file error = %v, want one that mentions --force", err)
	}
	if stdout != "" {
		t.Errorf("import-settings onto an existing file stdout = %q, want nothing", stdout)
	}
	if stderr != "" {
		t.Errorf("import-settings onto an existing file stderr = %q, want nothing", stderr)
	}
	if data, err := os.ReadFile(out); err != nil || string(data) != existing {
		t.Errorf("%s after import-settings without --force = %q, %v, want %q unchanged", out, data, err, existing)
	}

	stdout, _, err = runCommandOutput(t, append(args, "--force")...)
	if err != nil {
		t.Fatalf("import-settings --force error = %v, want nil", err)
	}
	if want := "Wrote " + out + " with 2 engines (SSEPython, R)."; !strings.Contains(stdout, want) {
		t.Errorf("import-settings --force stdout = %q, want it to contain %q", stdout, want)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), existing) {
		t.Errorf("%s after import-settings --force still holds the old content:\n%s", out, data)
	}
	if !strings.Contains(string(data), "engines:") {
		t.Errorf("%s after import-settings --force = %q, want an imported configuration", out, data)
	}
}

// utf16LEWithoutBOM returns text in UTF-16 LE without a byte order mark,
// as some editors save it.
func utf16LEWithoutBOM(text string) string {
	var data []byte
	for _, unit := range utf16.Encode([]rune(text)) {
		data = binary.LittleEndian.AppendUint16(data, unit)
	}
	return string(data)
}

// TestImportSettingsNothingToImport checks that a Settings.ini without a
// usable entry fails with a message saying why, and writes no file.
func TestImportSettingsNothingToImport(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    string
	}{
		{
			name:    "key in another section only",
			content: "[Settings 6]\r\nSSEPlugin=SSEPython,localhost:50051\r\n[Settings 7]\r\nLanguage=1033\r\n",
			want:    "no SSEPlugin= line under [Settings 7]",
		},
		{
			name:    "key empty",
			content: "[Settings 7]\r\nSSEPlugin=\r\n",
			want:    "no valid SSEPlugin entry to import",
		},
		{
			name:    "every entry malformed",
			content: "[Settings 7]\r\nSSEPlugin=SSEPython;R,localhost:port\r\n",
			want:    "no valid SSEPlugin entry to import",
		},
		{
			// Before the fix, this was "no SSEPlugin= line under
			// [Settings 7]", though the line is in the file.
			name:    "UTF-16 without a byte order mark",
			content: utf16LEWithoutBOM("[Settings 7]\r\nSSEPlugin=SSEPython,localhost:50051\r\n"),
			want:    "the file looks like UTF-16 LE text without a byte order mark, as NUL bytes alternate with ASCII characters; save it as UTF-8, or as UTF-16 with a byte order mark",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			settings := writeSampleSettings(t, []byte(tt.content))
			checkSettingsUnchanged(t, settings)
			out := filepath.Join(t.TempDir(), "ssegw.yaml")
			_, _, err := runCommandOutput(t, "import-settings", settings, "--out", out, "--gateway-host", "gw.example")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("import-settings error = %v, want one containing %q", err, tt.want)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("stat %s after a failed import-settings = %v, want the file not to exist", out, err)
			}
		})
	}

	t.Run("Settings.ini missing", func(t *testing.T) {
		dir := t.TempDir()
		out := filepath.Join(dir, "ssegw.yaml")
		_, _, err := runCommandOutput(t, "import-settings", filepath.Join(dir, "Settings.ini"), "--out", out, "--gateway-host", "gw.example")
		if err == nil || !strings.Contains(err.Error(), "reading Settings.ini") {
			t.Errorf("import-settings of a missing file error = %v, want one about reading Settings.ini", err)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("stat %s after a failed import-settings = %v, want the file not to exist", out, err)
		}
	})
}

// TestImportSettingsRejectsBadFlags checks that flag values that would
// make a broken configuration or SSEPlugin line are rejected, with a
// message naming the flag, and that no file is written.
func TestImportSettingsRejectsBadFlags(t *testing.T) {
	settings := copySampleSettings(t, "local-plaintext.ini")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"negative base port", []string{"--base-port", "-1"}, "invalid --base-port -1"},
		{"base port 0", []string{"--base-port", "0"}, "invalid --base-port 0"},
		{"base port above 65535", []string{"--base-port", "65536"}, "invalid --base-port 65536"},
		{"too few ports left", []string{"--base-port", "65535"}, "--base-port 65535 leaves too few ports: the 2 listeners need ports up to 65536"},
		{"empty gateway host", []string{"--gateway-host", ""}, "--gateway-host is empty"},
		{"gateway host with a port", []string{"--gateway-host", "gw.example:50051"}, `invalid --gateway-host "gw.example:50051": has a port`},
		{"wildcard gateway host", []string{"--gateway-host", "*.example"}, `invalid --gateway-host "*.example"`},
		{"listen address not an IP", []string{"--listen", "not an ip"}, `invalid --listen "not an ip"`},
		{"hosts mode with an IP address", []string{"--mode", "hosts", "--gateway-host", "10.0.0.1"}, "--mode hosts needs a --gateway-host that is a DNS name"},
		{"unknown mode", []string{"--mode", "bogus"}, `invalid --mode "bogus": use ports`},
		{"empty gateway folder", []string{"--gateway-certs", ""}, "--gateway-certs is empty; give the gateway's certificate folder"},
		{"blank gateway folder", []string{"--gateway-certs", " "}, "--gateway-certs is empty; give the gateway's certificate folder"},
		{"empty Qlik folder", []string{"--qlik-certs", ""}, "--qlik-certs is empty; give the folder on the Qlik server"},
		{"blank Qlik folder", []string{"--qlik-certs", " "}, "--qlik-certs is empty; give the folder on the Qlik server"},
		{"Qlik folder with a semicolon", []string{"--qlik-certs", `C:\certs;old`}, `invalid --qlik-certs "C:\\certs;old": contains ';', which separates the entries`},
		{"Qlik folder with a comma", []string{"--qlik-certs", `C:\certs,old`}, `invalid --qlik-certs "C:\\certs,old": contains ',', which separates the fields`},
		{"Qlik folder with a line break", []string{"--qlik-certs", "C:\\certs\nold"}, "contains U+000A, a control character or line break"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "ssegw.yaml")
			args := append([]string{"import-settings", settings, "--out", out, "--gateway-host", "gw.example"}, tt.args...)
			stdout, _, err := runCommandOutput(t, args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("import-settings %q error = %v, want one containing %q", tt.args, err, tt.want)
			}
			if stdout != "" {
				t.Errorf("import-settings %q stdout = %q, want nothing", tt.args, stdout)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("stat %s after a rejected import-settings = %v, want the file not to exist", out, err)
			}
		})
	}
}

// TestImportSettingsArguments checks that a missing Settings.ini
// argument, or extra arguments, are rejected with a message that names
// the one argument the command takes.
func TestImportSettingsArguments(t *testing.T) {
	_, _, err := runCommandOutput(t, "import-settings")
	if want := "import-settings needs the path of the QlikView Settings.ini to read"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("import-settings without arguments error = %v, want one containing %q", err, want)
	}

	_, _, err = runCommandOutput(t, "import-settings", "Settings.ini", "ssegw.yaml")
	if want := `import-settings reads one Settings.ini, the path given as its argument, but got 2 arguments: ["Settings.ini" "ssegw.yaml"]`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("import-settings with two arguments error = %v, want one containing %q", err, want)
	}
}

// TestImportSettingsRejectsSettingsAsOutput checks that --out naming the
// Settings.ini being imported is rejected, even with --force, and
// whatever path leads to the file.
func TestImportSettingsRejectsSettingsAsOutput(t *testing.T) {
	settings := copySampleSettings(t, "local-plaintext.ini")
	checkSettingsUnchanged(t, settings)
	dir := filepath.Dir(settings)
	symlink := filepath.Join(t.TempDir(), "link.ini")
	if err := os.Symlink(settings, symlink); err != nil {
		t.Fatal(err)
	}
	hardLink := filepath.Join(dir, "hard-link.ini")
	if err := os.Link(settings, hardLink); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		out  string
	}{
		{"same path", settings},
		// Not cleaned, unlike what filepath.Join returns.
		{"path through a parent folder", dir + string(filepath.Separator) + ".." + string(filepath.Separator) + filepath.Base(dir) + string(filepath.Separator) + "Settings.ini"},
		{"symbolic link", symlink},
		{"hard link", hardLink},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, _, err := runCommandOutput(t, "import-settings", settings, "--out", tt.out, "--force", "--gateway-host", "gw.example")
			want := "--out " + tt.out + " is the Settings.ini being imported"
			if err == nil {
				t.Errorf("import-settings --out %s error = nil, want one containing %q", tt.out, want)
			} else if !strings.Contains(err.Error(), want) {
				t.Errorf("import-settings --out %s error = %v, want one containing %q", tt.out, err, want)
			}
			if stdout != "" {
				t.Errorf("import-settings --out %s stdout = %q, want nothing", tt.out, stdout)
			}
		})
	}
	if info, err := os.Lstat(symlink); err != nil || info.Mode()&os.ModeSymlink == 0 {
		t.Errorf("%s after import-settings: %v; want it still a symbolic link", symlink, err)
	}
}

// TestImportSettingsCommandsWithSpaces checks that the commands printed
// for the admin quote a path with spaces, by running them in a shell:
// certs init must make the certificates where the configuration expects
// them, and validate must find the configuration.
func TestImportSettingsCommandsWithSpaces(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the commands are quoted for cmd.exe and PowerShell here, and this test runs sh")
	}
	binary := ssetest.Binary(t, "./cmd/ssegw")
	settings := copySampleSettings(t, "local-plaintext.ini")
	dir := filepath.Join(t.TempDir(), "my dir")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "ssegw.yaml")
	stdout, _, err := runCommandOutput(t, "import-settings", settings, "--out", out, "--gateway-host", "gw.example")
	if err != nil {
		t.Fatalf("import-settings error = %v\nstdout:\n%s", err, stdout)
	}

	commands := map[string]string{}
	for line := range strings.SplitSeq(stdout, "\n") {
		if _, command, ok := strings.Cut(line, ": ssegw "); ok {
			commands[strings.Fields(command)[0]] = "ssegw " + command
		}
	}
	wantCerts := "ssegw certs init --out '" + filepath.Join(dir, "certs") + "' --hosts gw.example"
	if commands["certs"] != wantCerts {
		t.Errorf("import-settings printed the command %q, want %q", commands["certs"], wantCerts)
	}
	wantValidate := "ssegw validate --config '" + out + "' --connect"
	if commands["validate"] != wantValidate {
		t.Errorf("import-settings printed the command %q, want %q", commands["validate"], wantValidate)
	}

	// sh runs each command as printed, with ssegw standing for the
	// binary under test. The variable that names it does not start with
	// SSEGW_, which validate would read as a configuration key.
	run := func(command string) string {
		t.Helper()
		shell := exec.Command("sh", "-c", `ssegw() { "$TEST_SSEGW_BINARY" "$@"; }; `+command)
		shell.Env = append(os.Environ(), "TEST_SSEGW_BINARY="+binary)
		output, _ := shell.CombinedOutput()
		return string(output)
	}
	if output := run(commands["certs"]); !strings.Contains(output, "Wrote certificates for gw.example") {
		t.Fatalf("sh -c %q output:\n%s\nwant the certificates written", commands["certs"], output)
	}
	if _, err := os.Stat(filepath.Join(dir, "certs", tlsutil.GatewayFolder, tlsutil.ServerCertFile)); err != nil {
		t.Errorf("after the printed certs init: %v; want the gateway's certificate beside the configuration", err)
	}
	if output := run(commands["validate"]); !strings.Contains(output, out+": valid: 2 listeners, 2 engines") {
		t.Errorf("sh -c %q output:\n%s\nwant the configuration found valid", commands["validate"], output)
	}
}

// TestWithSkippedEntriesCountMismatch checks that a gateway line whose
// entries do not match the plugins one for one is an error, not a panic.
func TestWithSkippedEntriesCountMismatch(t *testing.T) {
	plugins := []config.SSEPlugin{{Position: 1, Name: "A", Address: "localhost:50051"}}
	line, kept, err := withSkippedEntries(`SSEPlugin=A,gw.example:50052,C:\certs;old`, plugins, nil)
	if err == nil {
		t.Errorf("withSkippedEntries of 2 entries for 1 plugin = %q, %q, nil; want an error", line, kept)
	} else if !strings.Contains(err.Error(), "has 2 entries for 1 plugins") {
		t.Errorf("withSkippedEntries of 2 entries for 1 plugin error = %v, want one that gives both counts", err)
	}
}

// TestImportSettingsWriteError checks that a failed write of the
// configuration is an error, not a "Wrote" line.
func TestImportSettingsWriteError(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skipf("no /dev/full here: %v", err)
	}
	settings := copySampleSettings(t, "local-plaintext.ini")
	stdout, _, err := runCommandOutput(t, "import-settings", settings, "--out", "/dev/full", "--force", "--gateway-host", "gw.example")
	if err == nil || !strings.Contains(err.Error(), "writing the configuration /dev/full") {
		t.Errorf("import-settings --out /dev/full error = %v, want a write error", err)
	}
	if stdout != "" {
		t.Errorf("import-settings --out /dev/full stdout = %q, want nothing", stdout)
	}
}

// TestImportSettingsForceKeepsLink checks that --force over a symbolic
// link writes the file it points to, and leaves no temporary file.
func TestImportSettingsForceKeepsLink(t *testing.T) {
	settings := copySampleSettings(t, "local-plaintext.ini")
	dir := t.TempDir()
	target := filepath.Join(dir, "real.yaml")
	ssetest.WriteFile(t, target, []byte("# old\n"))
	link := filepath.Join(dir, "ssegw.yaml")
	if err := os.Symlink(target, link); err != nil {
		t.Skipf("cannot make a symbolic link here: %v", err)
	}
	if _, _, err := runCommandOutput(t, "import-settings", settings, "--out", link, "--force", "--gateway-host", "gw.example"); err != nil {
		t.Fatalf("import-settings --force: %v", err)
	}
	if info, err := os.Lstat(link); err != nil || info.Mode()&os.ModeSymlink == 0 {
		t.Errorf("%s after import-settings --force: %v, %v; want it still a symbolic link", link, info.Mode(), err)
	}
	if data, err := os.ReadFile(target); err != nil || !strings.Contains(string(data), "engines:") {
		t.Errorf("%s after import-settings --force = %q, %v; want the imported configuration", target, data, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("%s holds %d entries after import-settings --force, want 2: the link and its file", dir, len(entries))
	}
}

// TestImportSettingsForceDanglingLink checks that --force writes the file
// that a symbolic link names when that file does not exist yet, and that
// without --force such a link counts as an existing file.
func TestImportSettingsForceDanglingLink(t *testing.T) {
	settings := copySampleSettings(t, "local-plaintext.ini")
	dir := t.TempDir()
	link := filepath.Join(dir, "ssegw.yaml")
	if err := os.Symlink("real.yaml", link); err != nil {
		t.Skipf("cannot make a symbolic link here: %v", err)
	}
	if _, _, err := runCommandOutput(t, "import-settings", settings, "--out", link, "--gateway-host", "gw.example"); err == nil {
		t.Errorf("import-settings without --force onto a link = nil, want an error")
	}
	if _, _, err := runCommandOutput(t, "import-settings", settings, "--out", link, "--force", "--gateway-host", "gw.example"); err != nil {
		t.Fatalf("import-settings --force onto a link to a missing file: %v", err)
	}
	if info, err := os.Lstat(link); err != nil || info.Mode()&os.ModeSymlink == 0 {
		t.Errorf("%s after import-settings --force: %v; want it still a symbolic link", link, err)
	}
	if data, err := os.ReadFile(filepath.Join(dir, "real.yaml")); err != nil || !strings.Contains(string(data), "engines:") {
		t.Errorf("real.yaml after import-settings --force = %q, %v; want the imported configuration", data, err)
	}
}

// checkPartialImport checks that an import that skipped entries ended with
// exit status 1, after writing the others.
func checkPartialImport(t *testing.T, err error) {
	t.Helper()
	var exit exitError
	if !errors.As(err, &exit) || exit.code != 1 {
		t.Fatalf("import-settings error = %v, want exit status 1 for the skipped entries", err)
	}
}

// TestImportSettingsKeepsSkippedEntries checks that the SSEPlugin line
// printed for Qlik keeps each entry that the import skipped, as it was and
// at its place, and that the output names those entries. Replacing Qlik's
// line then loses no analytic connection.
func TestImportSettingsKeepsSkippedEntries(t *testing.T) {
	settings := writeSampleSettings(t, []byte("[Settings 7]\r\nSSEPlugin=A,localhost:50061;R,localhost:notaport;B,localhost:50062;a,localhost:50063\r\n"))
	out := filepath.Join(t.TempDir(), "ssegw.yaml")
	stdout, _, err := runCommandOutput(t, "import-settings", settings, "--out", out, "--gateway-host", "gw.example", "--base-port", "50051")
	checkPartialImport(t, err)
	want := "SSEPlugin=A,gw.example:50051,C:\\ProgramData\\ssegw\\qlik;R,localhost:notaport;B,gw.example:50052,C:\\ProgramData\\ssegw\\qlik;a,localhost:50063\n"
	if !strings.Contains(stdout, want) {
		t.Errorf("import-settings stdout = %q, want it to contain the line %q", stdout, want)
	}
	if !strings.Contains(stdout, "skipped entries 2, 4 stay in it as they were") {
		t.Errorf("import-settings stdout = %q, want it to name the entries kept as they were", stdout)
	}
	// No certs/gateway beside the configuration, which validate would
	// stop at.
	wantFolder := filepath.Join(filepath.Dir(out), "certs")
	if want := "Make the gateway's certificates first, since " + filepath.Join(wantFolder, "gateway") + " does not exist yet: ssegw certs init --out " + wantFolder + " --hosts gw.example"; !strings.Contains(stdout, want) {
		t.Errorf("import-settings stdout = %q, want it to contain %q", stdout, want)
	}
	// With certs/gateway beside the configuration, wherever the command
	// runs, no hint is printed.
	if err := os.MkdirAll(filepath.Join(wantFolder, "gateway"), 0o700); err != nil {
		t.Fatal(err)
	}
	stdout, _, err = runCommandOutput(t, "import-settings", settings, "--out", out, "--force", "--gateway-host", "gw.example", "--base-port", "50051")
	checkPartialImport(t, err)
	if strings.Contains(stdout, "Make the gateway's certificates first") {
		t.Errorf("import-settings stdout = %q, want no hint: %s exists", stdout, filepath.Join(wantFolder, "gateway"))
	}

	// In hosts mode, Qlik connects by each engine's name, which the
	// certificates must list too.
	hostsOut := filepath.Join(t.TempDir(), "hosts.yaml")
	stdout, _, err = runCommandOutput(t, "import-settings", settings, "--out", hostsOut, "--gateway-host", "gw.example", "--mode", "hosts")
	checkPartialImport(t, err)
	if want := "--hosts gw.example,a.gw.example,b.gw.example\n"; !strings.Contains(stdout, want) {
		t.Errorf("import-settings --mode hosts stdout = %q, want the certs init hint to end with %q", stdout, want)
	}

	one := writeSampleSettings(t, []byte("[Settings 7]\r\nSSEPlugin=A,localhost:50061;R,localhost:notaport\r\n"))
	stdout, _, err = runCommandOutput(t, "import-settings", one, "--out", filepath.Join(t.TempDir(), "ssegw.yaml"), "--gateway-host", "gw.example")
	checkPartialImport(t, err)
	if !strings.Contains(stdout, "skipped entry 2 stays in it as it was") {
		t.Errorf("import-settings stdout = %q, want it to name the one entry kept as it was", stdout)
	}

	// Qlik still calls the skipped entry's plugin on this host, so the
	// gateway does not take its port.
	local := writeSampleSettings(t, []byte("[Settings 7]\r\nSSEPlugin=Bad Name,localhost:50051;A,localhost:50055\r\n"))
	stdout, _, err = runCommandOutput(t, "import-settings", local, "--out", filepath.Join(t.TempDir(), "ssegw.yaml"), "--gateway-host", "localhost")
	checkPartialImport(t, err)
	if want := "SSEPlugin=Bad Name,localhost:50051;A,localhost:50052,"; !strings.Contains(stdout, want) {
		t.Errorf("import-settings stdout = %q, want it to contain %q: port 50051 stays the skipped plugin's", stdout, want)
	}
}

// TestImportSettingsQuotedValues checks an import of a Settings.ini whose
// SSEPlugin value is in double quotes, as GetPrivateProfileString allows,
// with a certificate folder in double quotes inside it. Before the fix,
// the first engine was rejected for the quote in its name, the last for
// the quote after its port, and the folder kept its quotes.
func TestImportSettingsQuotedValues(t *testing.T) {
	settings := writeSampleSettings(t, []byte("[Settings 7]\r\nSSEPlugin=\"SSEPython,localhost:50051,\""+samplePythonCerts+"\",30,10;R,localhost:50056\"\r\n"))
	checkSettingsUnchanged(t, settings)
	certs := ssetest.NewCerts(t)
	out := filepath.Join(t.TempDir(), "ssegw.yaml")

	stdout, stderr, err := runCommandOutput(t, "import-settings", settings, "--out", out, "--listen", "127.0.0.1",
		"--base-port", "50051", "--gateway-host", "gw.example", "--gateway-certs", certs.GatewayDir, "--qlik-certs", sampleQlikCerts)
	if err != nil {
		t.Fatalf("import-settings error = %v, want nil\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	if stderr != "" {
		t.Errorf("import-settings stderr = %q, want nothing", stderr)
	}
	wantLine := "SSEPlugin=SSEPython,gw.example:50052," + sampleQlikCerts + ",30,10;R,gw.example:50053," + sampleQlikCerts
	if got := lineAfter(t, stdout, "replace the SSEPlugin line with:"); got != wantLine {
		t.Errorf("import-settings printed SSEPlugin line = %q, want %q", got, wantLine)
	}

	// The folder, spaces and backslashes included, must read back from the
	// YAML as it is named in Settings.ini, without its quotes.
	writeQlikClientFolder(t, certs, filepath.Join(filepath.Dir(out), samplePythonCerts))
	cfg, err := parseImportedConfig(t, out)
	if err != nil {
		data, _ := os.ReadFile(out)
		t.Fatalf("config.Parse(imported) error:\n%v\nwant nil; file:\n%s", err, data)
	}
	checkImportedEngine(t, cfg, importedEngine{name: "SSEPython", address: "localhost:50051", tlsDir: samplePythonCerts, requestTimeout: 30 * time.Second, reconnectBuffer: 10 * time.Second})
	checkImportedEngine(t, cfg, importedEngine{name: "R", address: "localhost:50056", reconnectBuffer: 20 * time.Second})
}

// TestImportSettingsWarnsIgnoredLines checks that only the first SSEPlugin
// line under [Settings 7] is imported, as Windows reads only that one, and
// that a warning names each other line by its number. Before the fix, the
// last line was imported and the others were dropped without a word.
func TestImportSettingsWarnsIgnoredLines(t *testing.T) {
	settings := writeSampleSettings(t, []byte("[Settings 7]\r\nSSEPlugin=SSEPython,localhost:50051;R,localhost:50053\r\nLanguage=1033\r\nSSEPlugin=Old,localhost:50050\r\n"))
	checkSettingsUnchanged(t, settings)
	out := filepath.Join(t.TempDir(), "ssegw.yaml")

	stdout, stderr, err := runCommandOutput(t, "import-settings", settings, "--out", out, "--gateway-host", "gw.example", "--base-port", "50061")
	if err != nil {
		t.Fatalf("import-settings error = %v, want nil\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	wantStderr := `warning: ignored line 4 ("SSEPlugin=Old,localhost:50050"): line 2 sets SSEPlugin earlier in [Settings 7], and Windows reads only the first; delete line 4, or move its entries into line 2` + "\n"
	if stderr != wantStderr {
		t.Errorf("import-settings stderr = %q, want %q", stderr, wantStderr)
	}
	if want := "Wrote " + out + " with 2 engines (SSEPython, R).\n"; !strings.HasPrefix(stdout, want) {
		t.Errorf("import-settings stdout = %q, want it to start with %q", stdout, want)
	}
	wantLine := "SSEPlugin=SSEPython,gw.example:50061," + sampleQlikCerts + ";R,gw.example:50062," + sampleQlikCerts
	if got := lineAfter(t, stdout, "replace the SSEPlugin line with:"); got != wantLine {
		t.Errorf("import-settings printed SSEPlugin line = %q, want %q", got, wantLine)
	}
}

// TestImportSettingsControlCharacters checks that entries with a control
// character or text that is not UTF-8 are skipped with a message, and that
// the written configuration stays valid YAML.
func TestImportSettingsControlCharacters(t *testing.T) {
	settings := writeSampleSettings(t, []byte("[Settings 7]\r\nSSEPlugin=A,localhost:50061,C:\\certs\rx;B,localhost:50062,C:\\b\xe9;C,localhost:50063\r\n"))
	out := filepath.Join(t.TempDir(), "ssegw.yaml")
	_, stderr, err := runCommandOutput(t, "import-settings", settings, "--out", out, "--gateway-host", "gw.example")
	checkPartialImport(t, err)
	for _, want := range []string{
		`skipped entry 1 ("A,localhost:50061,C:\\certs\rx"): field "C:\\certs\rx" contains U+000D, a control character or line break`,
		`skipped entry 2 ("B,localhost:50062,C:\\b\xe9"): field "C:\\b\xe9" is not UTF-8 text`,
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("import-settings stderr = %q, want it to contain %q", stderr, want)
		}
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var imported struct {
		Engines map[string]any `yaml:"engines"`
	}
	if err := yaml.Unmarshal(data, &imported); err != nil {
		t.Fatalf("imported configuration is not valid YAML: %v\n%s", err, data)
	}
	if len(imported.Engines) != 1 || imported.Engines["C"] == nil {
		t.Errorf("imported engines = %v, want only C", imported.Engines)
	}
}

// TestYAMLStringRoundTrip checks that a YAML line with yamlString(text) as
// a value and yamlComment(text) as its comment is valid and reads back as
// text, for texts with quotes, line breaks and control characters.
func TestYAMLStringRoundTrip(t *testing.T) {
	texts := []string{
		`C:\Program Files\Qlik\certs`, "it's", `say "hi"`, "a\rb", "a\nb", "tab\there", "nel\u0085", "line\u2028separator",
		"\ufeffbom", "bell\a", "escape\x1b[0m", "ünïcode", "#not a comment", "",
	}
	for _, text := range texts {
		line := "value: " + yamlString(text) + "   # " + yamlComment(text) + "\n"
		var got struct {
			Value string `yaml:"value"`
		}
		if err := yaml.Unmarshal([]byte(line), &got); err != nil {
			t.Errorf("YAML line for %q is invalid: %v\n%s", text, err, line)
			continue
		}
		if got.Value != text {
			t.Errorf("YAML line %q reads as %q, want %q", line, got.Value, text)
		}
	}
}
