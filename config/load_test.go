package config_test

import (
	"errors"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ssegw/ssegw/config"
)

// TestParseValidFile checks that a file setting every key decodes into
// the expected Config, with engine names spelt as in the file.
func TestParseValidFile(t *testing.T) {
	set := writeCerts(t)
	yaml := `
listeners:
  - address: "127.0.0.1:50051"
    engine: SSEPython
    tls:
      dir: ` + quote(set.GatewayDir) + `
  - address: "[::1]:0"
    insecure: true
engines:
  SSEPython:
    hosts: [py.example, Py2.Example]
    request_timeout: 1m30s
    probe_interval: 2s
    probe_timeout: 1s
    balancer: round_robin
    reconnect_buffer: 5s
    max_waiting: 50
    replay: false
    replay_buffer: 1MiB
    max_attempts: 2
    max_in_flight: 8
    functions:
      Forecast: {request_timeout: 2m, max_attempts: 1}
    backends:
      - address: "127.0.0.1:50055"
      - address: "localhost:50056"
        tls:
          dir: ` + quote(set.QlikDir) + `
          server_name: localhost
  R:
    request_timeout: 0
    backends:
      - address: "127.0.0.1:50057"
limits:
  max_message_size: 4MiB
  max_header_list_size: 16384
keepalive:
  min_ping_interval: 20s
  backend_ping_interval: 1m
log:
  level: debug
  format: json
  access_log: false
telemetry:
  service_name: gateway-a
  traces: {exporter: otlp-http, endpoint: "127.0.0.1:4318", insecure: true, sampler_ratio: 0.25}
  metrics: {exporter: otlp, endpoint: "127.0.0.1:4317", interval: 15s}
redaction: {app_id: hash, user_id: drop, script_text: true}
admin: {address: "127.0.0.1:9000"}
state_dir: /var/lib/ssegw
drain_timeout: 45s
`
	got, err := config.Parse([]byte(yaml), nil)
	if err != nil {
		t.Fatalf("Parse() error: %v", err)
	}

	accessLogOff, quarter, replayOff := false, 0.25, false
	twoMinutes, fiveSeconds := 2*time.Minute, 5*time.Second
	want := &config.Config{
		Listeners: []config.Listener{
			{Address: "127.0.0.1:50051", Engine: "SSEPython", TLS: &config.ServerTLS{Dir: set.GatewayDir}},
			{Address: "[::1]:0", Insecure: true},
		},
		Engines: map[string]*config.Engine{
			"ssepython": {
				Name:           "SSEPython",
				Hosts:          []string{"py.example", "Py2.Example"},
				RequestTimeout: 90 * time.Second,
				Backends: []config.Backend{
					{Address: "127.0.0.1:50055"},
					{Address: "localhost:50056", TLS: &config.ClientTLS{Dir: set.QlikDir, ServerName: "localhost"}},
				},
				ProbeInterval: 2 * time.Second,
				ProbeTimeout:  time.Second,
				DNSInterval:   30 * time.Second,
				Balancer:      "round_robin",
				MaxWaiting:    50,
				ReplayBuffer:  1 << 20,
				MaxAttempts:   2,
				MaxInFlight:   8,
				Scripts:       "allow",
				Replay:        &replayOff,
				Functions: map[string]*config.FunctionPolicy{
					"forecast": {RequestTimeout: &twoMinutes, MaxAttempts: 1},
				},
				ReconnectBuffer: &fiveSeconds,
			},
			"r": {
				Name:          "R",
				Backends:      []config.Backend{{Address: "127.0.0.1:50057"}},
				ProbeInterval: 10 * time.Second,
				ProbeTimeout:  5 * time.Second,
				DNSInterval:   30 * time.Second,
				Balancer:      "least_request",
				MaxWaiting:    1000,
				ReplayBuffer:  8 << 20,
				MaxAttempts:   3,
				Scripts:       "allow",
			},
		},
		Limits:    config.Limits{MaxMessageSize: 4 << 20, MaxHeaderListSize: 16 << 10, MaxConcurrentStreams: 1000, MaxConnections: 1000, StreamWindow: 128 << 10},
		Keepalive: config.Keepalive{MinPingInterval: 20 * time.Second, BackendPingInterval: time.Minute},
		Log:       config.Log{Level: "debug", Format: "json", AccessLog: &accessLogOff},
		Telemetry: config.Telemetry{
			ServiceName: "gateway-a",
			Traces:      config.TraceExport{Exporter: "otlp-http", Endpoint: "127.0.0.1:4318", Insecure: true, SamplerRatio: &quarter},
			Metrics:     config.MetricExport{Exporter: "otlp", Endpoint: "127.0.0.1:4317", Interval: 15 * time.Second},
		},
		Redaction:                config.Redaction{AppID: "hash", UserID: "drop", ScriptText: true},
		Admin:                    config.Admin{Address: "127.0.0.1:9000"},
		StateDir:                 "/var/lib/ssegw",
		DrainTimeout:             45 * time.Second,
		CertificateExpiryWarning: 30 * 24 * time.Hour,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Parse() mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"R", "SSEPython"}, got.EngineNames()); diff != "" {
		t.Errorf("EngineNames() mismatch (-want +got):\n%s", diff)
	}
	if engine := got.Engine("SSEPYTHON"); engine == nil || engine.Name != "SSEPython" {
		t.Errorf("Engine(%q) = %+v, want the engine SSEPython", "SSEPYTHON", engine)
	}
}

// TestParseDefaults checks that keys left out of the file get their
// documented defaults.
func TestParseDefaults(t *testing.T) {
	yaml := `
listeners:
  - {address: ":0", insecure: true, insecure_remote: true}
engines:
  SSEPython:
    backends: [{address: "127.0.0.1:50055"}]
`
	got, err := config.Parse([]byte(yaml), nil)
	if err != nil {
		t.Fatalf("Parse() error: %v", err)
	}

	accessLogOn := true
	want := &config.Config{
		Listeners: []config.Listener{{Address: ":0", Insecure: true, InsecureRemote: true}},
		Engines: map[string]*config.Engine{
			"ssepython": {
				Name:          "SSEPython",
				Backends:      []config.Backend{{Address: "127.0.0.1:50055"}},
				ProbeInterval: 10 * time.Second,
				ProbeTimeout:  5 * time.Second,
				DNSInterval:   30 * time.Second,
				Balancer:      "least_request",
				MaxWaiting:    1000,
				ReplayBuffer:  8 << 20,
				MaxAttempts:   3,
				Scripts:       "allow",
			},
		},
		Limits:                   config.Limits{MaxMessageSize: 16 << 20, MaxHeaderListSize: 64 << 10, MaxConcurrentStreams: 1000, MaxConnections: 1000, StreamWindow: 128 << 10},
		Keepalive:                config.Keepalive{MinPingInterval: 5 * time.Second, BackendPingInterval: 5 * time.Minute},
		Log:                      config.Log{Level: "info", Format: "text", AccessLog: &accessLogOn},
		Redaction:                config.Redaction{AppID: "keep", UserID: "hash"},
		Admin:                    config.Admin{Address: "127.0.0.1:8081"},
		DrainTimeout:             30 * time.Second,
		CertificateExpiryWarning: 30 * 24 * time.Hour,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Parse() mismatch (-want +got):\n%s", diff)
	}
}

// TestParseInvalidYAML checks that text that is not YAML is rejected
// before anything else is looked at, naming the line of the mistake where
// the YAML parser names the start of the enclosing block, also after a
// list that spans several lines.
func TestParseInvalidYAML(t *testing.T) {
	const before = " (the lines before it parse): "
	tests := []struct{ text, want string }{
		{"log:\n  level: info\nengines: [SSEPython\nadmin:\n  address: x\n", "invalid YAML at line 3" + before + "did not find expected ',' or ']'"},
		{"engines:\n  R:\n    backends:\n      - address: a\n   bad: 1\n     worse: 2\n", "invalid YAML at line 5" + before + "did not find expected key"},
		{"listeners: [\n", "invalid YAML at line 1" + before + "did not find expected node content"},
		{"log: {level: info,\n  format: json}\nengines:\n  R:\n    backends:\n      - address: a\n   bad: 1\n", "invalid YAML at line 7" + before + "did not find expected key"},
		{"log:\n  level: \"info\n", "invalid YAML at line 2" + before + "found unexpected end of stream"},
		// Before the fix, Windows paths in double quotes gave only the
		// parser's message.
		{"listeners:\n  - address: 127.0.0.1:50051\n    tls: {dir: \"C:\\certs\\gateway\"}\n", "invalid YAML at line 3" + before + "found unknown escape character; " + backslashAdvice},
		{"state_dir: \"C:\\Users\\ssegw\"\n", "invalid YAML at line 1" + before + "did not find expected hexdecimal number; " + backslashAdvice},
	}
	for _, tt := range tests {
		_, err := config.Parse([]byte(tt.text), nil)
		if err == nil {
			t.Errorf("Parse(%q) error = nil, want an invalid YAML error", tt.text)
			continue
		}
		if !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("Parse(%q) error = %q, want it to start with %q", tt.text, err, tt.want)
		}
	}
}

// backslashAdvice is what Parse adds to the YAML parser's message for a
// backslash in double quotes that starts no escape.
const backslashAdvice = "in double quotes YAML reads a backslash as the start of an escape, so write Windows paths in single quotes, such as 'C:\\certs\\gateway', or with forward slashes"

// TestParseEscapedWindowsPath checks the advice added to a problem with a
// path that escapes in double quotes changed, which YAML parses without
// error. Before the fix, "C:\new\test\root" was only reported as folder
// C:, a line feed, "ew", a tab, "est", a carriage return and "oot" not
// found.
func TestParseEscapedWindowsPath(t *testing.T) {
	const file = "listeners: [{address: '127.0.0.1:0', insecure: true}]\nengines:\n  R:\n    backends:\n      - address: '127.0.0.1:50055'\n        tls: {dir: %s}\n"
	const advice = "in double quotes YAML reads a backslash as the start of an escape, and "
	tests := []struct {
		name string
		dir  string // as written in the file
		want string // at the end of the problem, or "" for no advice
	}{
		{
			name: "line feed, tab and carriage return",
			dir:  `"C:\new\test\root"`,
			want: advice + `\n made a line feed here, so write Windows paths in single quotes, such as 'C:\new\test\root', or with forward slashes`,
		},
		{
			name: "paragraph separator",
			dir:  `"D:\Plugins\r"`,
			want: advice + `\P made a paragraph separator here, so write Windows paths in single quotes, such as 'D:\Plugins\r', or with forward slashes`,
		},
		{
			name: "escaped backslash and bell",
			dir:  `"C:\\certs\a"`,
			want: advice + `\a made a bell character here, so write Windows paths in single quotes, such as 'C:\certs\a', or with forward slashes`,
		},
		{
			name: "single quote in the path",
			dir:  `"C:\\it's\tx"`,
			want: advice + `\t made a tab here, so write Windows paths in single quotes, such as 'C:\it''s\tx', or with forward slashes`,
		},
		{
			name: "hex escape",
			dir:  `"C:\\x\x01"`,
			want: advice + "an escape made U+0001 here, so write Windows paths in single quotes or with forward slashes",
		},
		{name: "single quotes", dir: `'C:\new\test'`},
		{name: "escaped backslashes", dir: `"C:\\new\\test"`},
		{name: "plain", dir: `C:\new\test`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := strings.Replace(file, "%s", tt.dir, 1)
			_, err := config.Parse([]byte(text), nil)
			if err == nil {
				t.Fatalf("Parse(%q) error = nil, want the folder not found", text)
			}
			if !strings.HasPrefix(err.Error(), "engines.R.backends[0].tls.dir: ") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("Parse(%q) error = %q, want one line about engines.R.backends[0].tls.dir", text, err)
			}
			if tt.want == "" {
				if strings.Contains(err.Error(), "in double quotes") {
					t.Errorf("Parse(%q) error = %q, want no advice on double quotes", text, err)
				}
				return
			}
			if !strings.HasSuffix(err.Error(), "; "+tt.want) {
				t.Errorf("Parse(%q) error = %q, want it to end with %q", text, err, "; "+tt.want)
			}
		})
	}

	t.Run("relative to the file's folder", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "ssegw.yaml")
		writeFile(t, path, strings.Replace(file, "%s", `"certs\test"`, 1))
		_, err := config.Load(path, nil)
		want := "; " + advice + `\t made a tab here, so write Windows paths in single quotes, such as 'certs\test', or with forward slashes`
		if err == nil || !strings.HasSuffix(err.Error(), want) {
			t.Errorf("Load(%q) error = %v, want it to end with %q", path, err, want)
		}
	})
}

// TestLoad checks that Load reads the file and names it in errors.
func TestLoad(t *testing.T) {
	dir := t.TempDir()

	t.Run("valid file", func(t *testing.T) {
		path := filepath.Join(dir, "ssegw.yaml")
		writeFile(t, path, "listeners: [{address: '127.0.0.1:0', insecure: true}]\nengines: {R: {backends: [{address: '127.0.0.1:50055'}]}}\n")
		cfg, err := config.Load(path, []string{"SSEGW_LOG_LEVEL=warn"})
		if err != nil {
			t.Fatalf("Load(%q) error: %v", path, err)
		}
		if cfg.Engine("R") == nil {
			t.Errorf("Load(%q).Engine(%q) = nil, want the engine", path, "R")
		}
		if cfg.Log.Level != "warn" {
			t.Errorf("Load(%q).Log.Level = %q, want %q", path, cfg.Log.Level, "warn")
		}
	})

	t.Run("invalid file", func(t *testing.T) {
		path := filepath.Join(dir, "invalid.yaml")
		writeFile(t, path, "engines: {R: {backends: [{address: '127.0.0.1:50055'}]}}\n")
		_, err := config.Load(path, nil)
		if err == nil {
			t.Fatalf("Load(%q) error = nil, want an error", path)
		}
		if !strings.HasPrefix(err.Error(), "config "+path+":\n") {
			t.Errorf("Load(%q) error = %q, want it to start with the file name", path, err)
		}
		if !strings.Contains(err.Error(), "listeners: none configured") {
			t.Errorf("Load(%q) error = %q, want the missing listeners reported", path, err)
		}
	})

	t.Run("missing file", func(t *testing.T) {
		path := filepath.Join(dir, "missing.yaml")
		_, err := config.Load(path, nil)
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Load(%q) error = %v, want fs.ErrNotExist", path, err)
		}
		if err != nil && !strings.Contains(err.Error(), path) {
			t.Errorf("Load(%q) error = %q, want it to name the file", path, err)
		}
	})
}

// envFile is the file that environment tests override. Its engine names
// are spelt in mixed case, and one contains an underscore.
const envFile = `
listeners:
  - {address: "127.0.0.1:0", insecure: true, engine: SSEPython}
engines:
  SSEPython:
    hosts: [py.example]
    backends:
      - address: "localhost:50055"
        tls: {dir: %QLIK_DIR%}
  SSE_R:
    backends: [{address: "127.0.0.1:50056"}]
`

// parseEnvFile parses envFile, with a certificate set for its backend,
// under environ.
func parseEnvFile(t *testing.T, environ []string) (*config.Config, error) {
	t.Helper()
	set := writeCerts(t)
	yaml := strings.ReplaceAll(envFile, "%QLIK_DIR%", quote(set.QlikDir))
	return config.Parse([]byte(yaml), environ)
}

// TestParseEnvironment checks that SSEGW_ variables override the keys they
// name, and that other variables are ignored.
func TestParseEnvironment(t *testing.T) {
	tests := []struct {
		name    string
		environ []string
		// get picks the overridden value out of the result.
		get  func(*config.Config) any
		want any
	}{
		{
			name:    "log level",
			environ: []string{"SSEGW_LOG_LEVEL=debug"},
			get:     func(c *config.Config) any { return c.Log.Level },
			want:    "debug",
		},
		{
			name:    "engine key ignores case",
			environ: []string{"SSEGW_ENGINES_SSEPYTHON_REQUEST_TIMEOUT=5s"},
			get:     func(c *config.Config) any { return c.Engine("SSEPython").RequestTimeout },
			want:    5 * time.Second,
		},
		{
			name:    "engine name keeps its spelling",
			environ: []string{"SSEGW_ENGINES_SSEPYTHON_REQUEST_TIMEOUT=5s"},
			get:     func(c *config.Config) any { return c.Engine("SSEPython").Name },
			want:    "SSEPython",
		},
		{
			name:    "engine name with underscore",
			environ: []string{"SSEGW_ENGINES_SSE_R_REQUEST_TIMEOUT=7s"},
			get:     func(c *config.Config) any { return c.Engine("SSE_R").RequestTimeout },
			want:    7 * time.Second,
		},
		{
			name:    "count with a leading zero is decimal",
			environ: []string{"SSEGW_ENGINES_SSEPYTHON_MAX_IN_FLIGHT=010"},
			get:     func(c *config.Config) any { return c.Engine("SSEPython").MaxInFlight },
			want:    10,
		},
		{
			name:    "listener address",
			environ: []string{"SSEGW_LISTENERS_0_ADDRESS=127.0.0.1:50099"},
			get:     func(c *config.Config) any { return c.Listeners[0].Address },
			want:    "127.0.0.1:50099",
		},
		{
			name:    "hosts as comma list",
			environ: []string{"SSEGW_ENGINES_SSEPYTHON_HOSTS=a.example, b.example"},
			get:     func(c *config.Config) any { return c.Engine("SSEPython").Hosts },
			want:    []string{"a.example", "b.example"},
		},
		{
			name:    "backend tls server name",
			environ: []string{"SSEGW_ENGINES_SSEPYTHON_BACKENDS_0_TLS_SERVER_NAME=x"},
			get:     func(c *config.Config) any { return c.Engine("SSEPython").Backends[0].TLS.ServerName },
			want:    "x",
		},
		{
			name:    "backend tls keeps its dir",
			environ: []string{"SSEGW_ENGINES_SSEPYTHON_BACKENDS_0_TLS_SERVER_NAME=x"},
			get:     func(c *config.Config) any { return filepath.Base(c.Engine("SSEPython").Backends[0].TLS.Dir) },
			want:    "qlik",
		},
		{
			name:    "size with unit",
			environ: []string{"SSEGW_LIMITS_MAX_MESSAGE_SIZE=8MiB"},
			get:     func(c *config.Config) any { return c.Limits.MaxMessageSize },
			want:    config.ByteSize(8 << 20),
		},
		{
			name:    "duration in a section missing from the file",
			environ: []string{"SSEGW_KEEPALIVE_BACKEND_PING_INTERVAL=30s"},
			get:     func(c *config.Config) any { return c.Keepalive.BackendPingInterval },
			want:    30 * time.Second,
		},
		{
			name:    "later variable wins",
			environ: []string{"SSEGW_LOG_LEVEL=debug", "SSEGW_LOG_LEVEL=error"},
			get:     func(c *config.Config) any { return c.Log.Level },
			want:    "error",
		},
		{
			name:    "variables without the prefix",
			environ: []string{"LOG_LEVEL=debug", "SSEGWLOG_LEVEL=debug", "PATH=/usr/bin", "SSEGW_LOG_LEVEL"},
			get:     func(c *config.Config) any { return c.Log.Level },
			want:    "info",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseEnvFile(t, tt.environ)
			if err != nil {
				t.Fatalf("Parse() with %q error: %v", tt.environ, err)
			}
			if diff := cmp.Diff(tt.want, tt.get(cfg)); diff != "" {
				t.Errorf("Parse() with %q mismatch (-want +got):\n%s", tt.environ, diff)
			}
		})
	}
}

// TestEnvironmentSuggestsOnlyKeys checks that a variable gets no
// suggestion that would be refused too: a misspelt section followed by
// no key of it, or a misspelt section alone, which names no value.
func TestEnvironmentSuggestsOnlyKeys(t *testing.T) {
	for _, variable := range []string{"SSEGW_LIMTS_COLOUR", "SSEGW_LIMTS", "SSEGW_LOGS"} {
		_, err := parseEnvFile(t, []string{variable + "=1"})
		want := "environment variable " + variable + ": no such configuration key"
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "did you mean") {
			t.Errorf("Parse() with %s error = %v, want %q without a suggestion", variable, err, want)
		}
	}
}

// TestParseEnvironmentProblems checks that a variable naming no key, or
// carrying an invalid value, is reported under its own name or the key.
func TestParseEnvironmentProblems(t *testing.T) {
	tests := []struct {
		name    string
		environ []string
		want    []problem
	}{
		{
			name:    "no such key",
			environ: []string{"SSEGW_LOG_COLOUR=red"},
			want:    []problem{{"environment variable SSEGW_LOG_COLOUR", "no such configuration key"}},
		},
		{
			name:    "misspelt key",
			environ: []string{"SSEGW_DRAIN_TIMOUT=5s"},
			want:    []problem{{"environment variable SSEGW_DRAIN_TIMOUT", "no such configuration key; did you mean SSEGW_DRAIN_TIMEOUT?"}},
		},
		{
			name:    "misspelt engine key",
			environ: []string{"SSEGW_ENGINES_SSEPYTHON_REQUEST_TIMOUT=5s"},
			want:    []problem{{"environment variable SSEGW_ENGINES_SSEPYTHON_REQUEST_TIMOUT", "no such configuration key; did you mean SSEGW_ENGINES_SSEPYTHON_REQUEST_TIMEOUT?"}},
		},
		{
			name:    "misspelt map section",
			environ: []string{"SSEGW_ENGNES_SSEPYTHON_REQUEST_TIMEOUT=5s"},
			want:    []problem{{"environment variable SSEGW_ENGNES_SSEPYTHON_REQUEST_TIMEOUT", "no such configuration key; did you mean SSEGW_ENGINES_SSEPYTHON_REQUEST_TIMEOUT?"}},
		},
		{
			name:    "misspelt list section",
			environ: []string{"SSEGW_LISTENRS_0_ADDRESS=127.0.0.1:50099"},
			want:    []problem{{"environment variable SSEGW_LISTENRS_0_ADDRESS", "no such configuration key; did you mean SSEGW_LISTENERS_0_ADDRESS?"}},
		},
		{
			name:    "misspelt section",
			environ: []string{"SSEGW_LIMTS_MAX_MESSAGE_SIZE=8MiB"},
			want:    []problem{{"environment variable SSEGW_LIMTS_MAX_MESSAGE_SIZE", "no such configuration key; did you mean SSEGW_LIMITS_MAX_MESSAGE_SIZE?"}},
		},
		{
			name:    "no such section",
			environ: []string{"SSEGW_LOGGING_LEVEL=debug"},
			want:    []problem{{"environment variable SSEGW_LOGGING_LEVEL", "no such configuration key"}},
		},
		{
			name:    "no such list item",
			environ: []string{"SSEGW_LISTENERS_5_ADDRESS=127.0.0.1:50099"},
			want:    []problem{{"environment variable SSEGW_LISTENERS_5_ADDRESS", `no list item "5"`}},
		},
		{
			name:    "no such engine",
			environ: []string{"SSEGW_ENGINES_JULIA_REQUEST_TIMEOUT=5s"},
			want:    []problem{{"environment variable SSEGW_ENGINES_JULIA_REQUEST_TIMEOUT", `no entry "julia"`}},
		},
		{
			name:    "whole engine",
			environ: []string{"SSEGW_ENGINES_SSEPYTHON=x"},
			want:    []problem{{"environment variable SSEGW_ENGINES_SSEPYTHON", "names a whole entry"}},
		},
		{
			name:    "whole list item",
			environ: []string{"SSEGW_LISTENERS_0=x"},
			want:    []problem{{"environment variable SSEGW_LISTENERS_0", "names a whole list item"}},
		},
		{
			name:    "whole section",
			environ: []string{"SSEGW_LOG=debug"},
			want:    []problem{{"environment variable SSEGW_LOG", ""}},
		},
		{
			name:    "each bad variable",
			environ: []string{"SSEGW_LOG_COLOUR=red", "SSEGW_LISTENERS_5_ADDRESS=x"},
			want: []problem{
				{"environment variable SSEGW_LOG_COLOUR", "no such configuration key"},
				{"environment variable SSEGW_LISTENERS_5_ADDRESS", `no list item "5"`},
			},
		},
		{
			name:    "invalid log level",
			environ: []string{"SSEGW_LOG_LEVEL=loud"},
			want:    []problem{{"log.level", `unknown level "loud"; use debug, info, warn or error (set by SSEGW_LOG_LEVEL)`}},
		},
		{
			name:    "duration without unit",
			environ: []string{"SSEGW_ENGINES_SSEPYTHON_REQUEST_TIMEOUT=30"},
			want:    []problem{{"engines.SSEPython.request_timeout", "duration 30 has no unit: write 30s for seconds (set by SSEGW_ENGINES_SSEPYTHON_REQUEST_TIMEOUT)"}},
		},
		{
			name:    "count that is not a whole number",
			environ: []string{"SSEGW_ENGINES_SSEPYTHON_MAX_IN_FLIGHT=0x10"},
			want:    []problem{{"engines.SSEPython.max_in_flight", `invalid whole number "0x10" (set by SSEGW_ENGINES_SSEPYTHON_MAX_IN_FLIGHT)`}},
		},
		{
			name:    "invalid size",
			environ: []string{"SSEGW_LIMITS_MAX_MESSAGE_SIZE=8 megabytes"},
			want:    []problem{{"limits.max_message_size", `such as 16MiB (set by SSEGW_LIMITS_MAX_MESSAGE_SIZE)`}},
		},
		{
			name:    "invalid listener address",
			environ: []string{"SSEGW_LISTENERS_0_ADDRESS=50051"},
			want:    []problem{{"listeners[0].address", `or :50051 for every interface (set by SSEGW_LISTENERS_0_ADDRESS)`}},
		},
		{
			name:    "problem of the listener a variable changed",
			environ: []string{"SSEGW_LISTENERS_0_ADDRESS=0.0.0.0:50051", "SSEGW_LISTENERS_0_ENGINE=SSE_R"},
			want: []problem{{"listeners[0]", `insecure_remote: true ` +
				`(in the environment, SSEGW_LISTENERS_0_ADDRESS sets listeners[0].address, SSEGW_LISTENERS_0_ENGINE sets listeners[0].engine)`}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseEnvFile(t, tt.environ)
			checkProblems(t, err, tt.want)
		})
	}
}

// TestParseFunctionKeySpelling checks that messages name a function
// policy as the file spells it, as they name engines, whether validation,
// decoding, an unknown key or an environment variable finds the problem.
func TestParseFunctionKeySpelling(t *testing.T) {
	const listeners = `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
`
	tests := []struct {
		name    string
		engines string
		environ []string
		want    []problem
	}{
		{
			name: "validation",
			engines: `
engines:
  A:
    functions: {SumOfRows: {request_timeout: -1s, max_attempts: 11}}
    backends: [{address: "127.0.0.1:50055"}]
`,
			want: []problem{
				{"engines.A.functions.SumOfRows.request_timeout", "-1s is negative"},
				{"engines.A.functions.SumOfRows.max_attempts", "11 is out of range"},
			},
		},
		{
			name: "decoding and validation in one policy",
			engines: `
engines:
  A:
    functions: {SumOfRows: {replay: maybe, max_attempts: 11}}
    backends: [{address: "127.0.0.1:50055"}]
`,
			want: []problem{
				{"engines.A.functions.SumOfRows.replay", `"maybe" is not true or false`},
				{"engines.A.functions.SumOfRows.max_attempts", "11 is out of range"},
			},
		},
		{
			name: "unknown key",
			engines: `
engines:
  A:
    functions: {SumOfRows: {replai: false}}
    backends: [{address: "127.0.0.1:50055"}]
`,
			want: []problem{{"engines.A.functions.SumOfRows", "unknown key replai; did you mean replay?"}},
		},
		{
			name: "environment variable",
			engines: `
engines:
  A:
    functions: {SumOfRows: {max_attempts: 2}}
    backends: [{address: "127.0.0.1:50055"}]
`,
			environ: []string{"SSEGW_ENGINES_A_FUNCTIONS_SUMOFROWS_REPLAY=maybe"},
			want:    []problem{{"engines.A.functions.SumOfRows.replay", `"maybe" is not true or false`}},
		},
		{
			name: "functions key in another case",
			engines: `
engines:
  A:
    Functions: {SumOfRows: {max_attempts: 11}}
    backends: [{address: "127.0.0.1:50055"}]
`,
			want: []problem{{"engines.A.functions.SumOfRows.max_attempts", "11 is out of range"}},
		},
		{
			name: "function named like an engine",
			engines: `
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
  A:
    functions: {r: {replay: maybe}}
    backends: [{address: "127.0.0.1:50056"}]
`,
			want: []problem{{"engines.A.functions.r.replay", `"maybe" is not true or false`}},
		},
		{
			name: "functions shared by an alias",
			engines: `
engines:
  A:
    functions: &shared {SumOfRows: {max_attempts: 11}}
    backends: [{address: "127.0.0.1:50055"}]
  B:
    functions: *shared
    backends: [{address: "127.0.0.1:50056"}]
`,
			want: []problem{
				{"engines.A.functions.SumOfRows.max_attempts", "11 is out of range"},
				{"engines.B.functions.SumOfRows.max_attempts", "11 is out of range"},
			},
		},
		{
			// viper would keep one of the two policies, either.
			name: "names that differ only in case",
			engines: `
engines:
  A:
    functions: {SumOfRows: {max_attempts: 2}, sumOfRows: {max_attempts: 3}, Other: {}}
    backends: [{address: "127.0.0.1:50055"}]
  B:
    functions: {SumOfRows: {max_attempts: 2}}
    Functions: {sumofrows: {max_attempts: 3}}
    backends: [{address: "127.0.0.1:50056"}]
`,
			want: []problem{
				{"engines.A.functions", `"SumOfRows" and "sumOfRows" differ only in case`},
				{"engines.B.functions", `"SumOfRows" and "sumofrows" differ only in case`},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Parse([]byte(listeners+tt.engines), tt.environ)
			checkProblems(t, err, tt.want)
		})
	}
}

// TestFunctionPolicyIgnoresCase checks that a call finds its function's
// policy whatever the case of the name in the file or in the call.
func TestFunctionPolicyIgnoresCase(t *testing.T) {
	yaml := `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  A:
    functions: {SumOfRows: {max_attempts: 1}}
    backends: [{address: "127.0.0.1:50055"}]
`
	cfg, err := config.Parse([]byte(yaml), nil)
	if err != nil {
		t.Fatalf("Parse() error: %v", err)
	}
	for _, function := range []string{"SumOfRows", "sumofrows", "SUMOFROWS"} {
		if got := cfg.Engine("A").PolicyFor(function).MaxAttempts; got != 1 {
			t.Errorf("PolicyFor(%q).MaxAttempts = %d, want 1", function, got)
		}
	}
}

// TestValidateFunctionKeysInCode checks that Validate, for a Config
// built in code as the demo command builds one, names a function policy
// by its key in the map.
func TestValidateFunctionKeysInCode(t *testing.T) {
	cfg := &config.Config{
		Listeners: []config.Listener{{Address: "127.0.0.1:0", Insecure: true}},
		Engines: map[string]*config.Engine{
			"A": {
				Backends:  []config.Backend{{Address: "127.0.0.1:50055"}},
				Functions: map[string]*config.FunctionPolicy{"SumOfRows": {MaxAttempts: 11}},
			},
		},
	}
	cfg.ApplyDefaults()
	checkProblems(t, cfg.Validate(), []problem{{"engines.A.functions.SumOfRows.max_attempts", "11 is out of range"}})
}

// TestValidateEmptyEngineInCode checks that an engine without keys in a
// configuration built in code, a nil entry, gets its defaults and its
// problems like one in a file, where Validate panicked on it.
func TestValidateEmptyEngineInCode(t *testing.T) {
	cfg := &config.Config{
		Listeners: []config.Listener{{Address: "127.0.0.1:0", Insecure: true}},
		Engines:   map[string]*config.Engine{"A": nil},
	}
	cfg.ApplyDefaults()
	if engine := cfg.Engine("A"); engine == nil || engine.Name != "A" || engine.ProbeInterval != config.DefaultProbeInterval {
		t.Fatalf("engine A after ApplyDefaults = %+v, want its name and defaults", engine)
	}
	checkProblems(t, cfg.Validate(), []problem{{"engines.A.backends", "none configured"}})
}

// TestApplyDefaultsLowerCasesPins checks that ApplyDefaults writes the hex
// digits of sha256: entries of allow_clients in lower case, as the gateway
// writes a client's key, so that a pin that Validate accepts with
// upper-case digits still matches. Other entries stay as written.
func TestApplyDefaultsLowerCasesPins(t *testing.T) {
	lower := "sha256:" + strings.Repeat("ab12", 16)
	tests := []struct {
		name  string
		entry string
		want  string
	}{
		{name: "upper-case pin", entry: "sha256:" + strings.Repeat("AB12", 16), want: lower},
		{name: "mixed-case pin", entry: "sha256:" + strings.Repeat("Ab12", 16), want: lower},
		{name: "lower-case pin", entry: lower, want: lower},
		{name: "common name keeps its case", entry: "QLIK-PROD", want: "QLIK-PROD"},
		{name: "invalid pin stays as written", entry: "sha256:ABC", want: "sha256:ABC"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			written := []string{tt.entry}
			cfg := &config.Config{Engines: map[string]*config.Engine{"R": {AllowClients: written}}}
			cfg.ApplyDefaults()
			if got := cfg.Engines["R"].AllowClients; !slices.Equal(got, []string{tt.want}) {
				t.Errorf("allow_clients after ApplyDefaults() = %q, want %q", got, []string{tt.want})
			}
			if written[0] != tt.entry {
				t.Errorf("ApplyDefaults() changed the caller's slice to %q, want it left as %q", written[0], tt.entry)
			}
		})
	}
}

// TestParseListFromString checks that a list written as one string in the
// file is split at commas with the spaces around each item removed, as a
// list from an environment variable is.
func TestParseListFromString(t *testing.T) {
	yaml := `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R:
    hosts: "a.example, b.example"
    allow_clients: "qlik-a,  qlik-b "
    backends: [{address: "127.0.0.1:50055"}]
`
	cfg, err := config.Parse([]byte(yaml), nil)
	if err != nil {
		t.Fatalf("Parse() error: %v", err)
	}
	engine := cfg.Engine("R")
	if want := []string{"a.example", "b.example"}; !slices.Equal(engine.Hosts, want) {
		t.Errorf("hosts = %q, want %q", engine.Hosts, want)
	}
	if want := []string{"qlik-a", "qlik-b"}; !slices.Equal(engine.AllowClients, want) {
		t.Errorf("allow_clients = %q, want %q", engine.AllowClients, want)
	}
}
