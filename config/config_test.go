package config_test

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/tlsutil"
)

// problem is one line expected in a configuration error: it starts with
// the key at fault, written as engines.R.request_timeout, and contains
// text.
type problem struct {
	key  string
	text string
}

// checkProblems fails the test unless err has exactly one line per
// expected problem, each starting with its key. No expected problems
// means err must be nil.
func checkProblems(t *testing.T, err error, want []problem) {
	t.Helper()
	if len(want) == 0 {
		if err != nil {
			t.Fatalf("Parse() error:\n%v\nwant no error", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("Parse() error = nil, want %d problems", len(want))
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Errorf("Parse() error has %d lines, want %d:\n%v", len(lines), len(want), err)
	}
	for _, w := range want {
		if !hasProblem(lines, w) {
			t.Errorf("Parse() error:\n%v\nwant a line starting %q and containing %q", err, w.key, w.text)
		}
	}
}

func hasProblem(lines []string, want problem) bool {
	for _, line := range lines {
		rest, ok := strings.CutPrefix(line, want.key)
		if !ok || !(strings.HasPrefix(rest, ": ") || strings.HasPrefix(rest, " ")) {
			continue
		}
		if strings.Contains(rest, want.text) {
			return true
		}
	}
	return false
}

// writeCerts writes a valid certificate set for localhost below a
// temporary folder.
func writeCerts(t *testing.T) tlsutil.Set {
	t.Helper()
	set, err := tlsutil.WriteSet(t.TempDir(), []string{"localhost", "127.0.0.1"}, tlsutil.SetOptions{})
	if err != nil {
		t.Fatalf("WriteSet() error: %v", err)
	}
	return set
}

// TestValidateProblems checks that each kind of mistake is reported on one
// line that names the key at fault, and that nothing else is reported.
// endpointCaseBase is a valid file without telemetry, to which the cases
// of OTLP endpoints add theirs.
const endpointCaseBase = `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}`

func TestValidateProblems(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []problem
	}{
		{
			name: "unknown engine on listener",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true, engine: Nope}
engines:
  SSEPython: {backends: [{address: "127.0.0.1:50055"}]}
  R: {backends: [{address: "127.0.0.1:50056"}]}
`,
			want: []problem{{"listeners[0].engine", `unknown engine "Nope"; configured engines: R, SSEPython`}},
		},
		{
			name: "OTLP endpoints that cannot work",
			yaml: endpointCaseBase + `
telemetry:
  traces: {exporter: otlp-http, endpoint: "http://[::1"}
  metrics: {exporter: otlp, endpoint: "::1:4317"}
`,
			want: []problem{
				{"telemetry.traces.endpoint", `"http://[::1" is not a valid URL: missing ']' in host`},
				{"telemetry.metrics.endpoint", `"::1:4317" has an IPv6 address without brackets; write the address in brackets, such as [::1]:4317`},
			},
		},
		{
			name: "OTLP endpoints with a bad scheme or port",
			yaml: endpointCaseBase + `
telemetry:
  traces: {exporter: otlp, endpoint: "grpc://[::1]:4317"}
  metrics: {exporter: otlp, endpoint: "localhost:99999"}
`,
			want: []problem{
				{"telemetry.traces.endpoint", `"grpc://[::1]:4317" has the unknown scheme "grpc"`},
				{"telemetry.metrics.endpoint", `"localhost:99999" has the port 99999; want a number from 0 to 65535`},
			},
		},
		{
			name: "OTLP endpoint that is not host:port",
			yaml: endpointCaseBase + `
telemetry:
  traces: {exporter: otlp, endpoint: "[::1"}
`,
			want: []problem{{"telemetry.traces.endpoint", `"[::1" is not host:port: missing ']' in address`}},
		},
		{
			name: "OTLP endpoints that work",
			yaml: endpointCaseBase + `
telemetry:
  traces: {exporter: otlp-http, endpoint: "http://[::1]:4318"}
  metrics: {exporter: otlp, endpoint: "[::1]:4317"}
`,
		},
		{
			name: "OTLP endpoints without a port, or as a gRPC target",
			yaml: endpointCaseBase + `
telemetry:
  traces: {exporter: otlp, endpoint: "unix:/run/otel/collector.sock"}
  metrics: {exporter: otlp, endpoint: "collector"}
`,
		},
		{
			name: "OTLP endpoints in grpc-go's target forms, an upper-case scheme and no host",
			yaml: endpointCaseBase + `
telemetry:
  traces: {exporter: otlp, endpoint: "dns:collector:4317"}
  metrics: {exporter: otlp-http, endpoint: "HTTP://collector:4318"}
`,
		},
		{
			name: "OTLP endpoint in grpc-go's other target forms",
			yaml: endpointCaseBase + `
telemetry:
  traces: {exporter: otlp, endpoint: "passthrough:127.0.0.1:4317"}
  metrics: {exporter: otlp, endpoint: ":4317"}
`,
		},
		{
			name: "gRPC target for OTLP/HTTP",
			yaml: endpointCaseBase + `
telemetry:
  traces: {exporter: otlp-http, endpoint: "unix-abstract:otel"}
  metrics: {exporter: otlp-http, endpoint: "http://collector:99999"}
`,
			want: []problem{
				{"telemetry.traces.endpoint", `"unix-abstract:otel" is a gRPC target; OTLP/HTTP takes an http:// or https:// URL`},
				{"telemetry.metrics.endpoint", `"http://collector:99999" has the port 99999`},
			},
		},
		{
			name: "service name as the port of OTLP/HTTP",
			yaml: endpointCaseBase + `
telemetry:
  traces: {exporter: otlp-http, endpoint: "collector:http"}
  metrics: {exporter: otlp, endpoint: "collector:https"}
`,
			want: []problem{{"telemetry.traces.endpoint", `"collector:http" has the port "http"; OTLP/HTTP takes a number`}},
		},
		{
			name: "listener engine matches ignoring case",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true, engine: ssepython}
engines:
  SSEPython: {backends: [{address: "127.0.0.1:50055"}]}
`,
		},
		{
			name: "same listener address twice",
			yaml: `
listeners:
  - {address: "127.0.0.1:50051", insecure: true}
  - {address: "127.0.0.1:50051", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
`,
			want: []problem{{"listeners[1].address", "already used by listeners[0]"}},
		},
		{
			name: "every interface and loopback on one port",
			yaml: `
listeners:
  - {address: ":50051", insecure: true, insecure_remote: true}
  - {address: "127.0.0.1:50051", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
`,
			want: []problem{{"listeners[1].address", "already used by listeners[0]"}},
		},
		{
			name: "loopback then every interface on one port",
			yaml: `
listeners:
  - {address: "127.0.0.1:50051", insecure: true}
  - {address: "[::]:50051", insecure: true, insecure_remote: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
`,
			want: []problem{{"listeners[1].address", "already used by listeners[0]"}},
		},
		{
			name: "one port in two spellings",
			yaml: `
listeners:
  - {address: "127.0.0.1:8080", insecure: true}
  - {address: "127.0.0.1:08080", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
`,
			want: []problem{{"listeners[1].address", "already used by listeners[0]"}},
		},
		{
			name: "one host in two spellings on one port",
			yaml: `
listeners:
  - {address: "127.0.0.1:50051", insecure: true}
  - {address: "[::ffff:127.0.0.1]:50051", insecure: true, insecure_remote: true}
  - {address: "[::1]:50052", insecure: true}
  - {address: "[0:0:0:0:0:0:0:1]:50052", insecure: true, insecure_remote: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
`,
			want: []problem{{"listeners[1].address", "already used by listeners[0]"}, {"listeners[3].address", "already used by listeners[2]"}},
		},
		{
			// Go listens on IPv6 too for 0.0.0.0, so ::1 on its port fails.
			name: "every IPv4 interface and IPv6 loopback on one port",
			yaml: `
listeners:
  - {address: "0.0.0.0:50051", insecure: true, insecure_remote: true}
  - {address: "[::1]:50051", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
`,
			want: []problem{{"listeners[1].address", "already used by listeners[0]"}},
		},
		{
			name: "IPv4 and IPv6 loopback on one port",
			yaml: `
listeners:
  - {address: "127.0.0.1:50051", insecure: true}
  - {address: "[::1]:50051", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
`,
		},
		{
			name: "a backend that is the gateway's own listener",
			yaml: `
listeners:
  - {address: "127.0.0.1:50351", insecure: true}
  - {address: ":50352", insecure: true, insecure_remote: true}
engines:
  R: {backends: [{address: "localhost:50351"}, {address: "127.0.0.1:50352"}, {address: "127.0.0.2:50351"}, {address: "plugins.example:50352"}, {address: "127.0.0.1:8091"}]}
admin: {address: "127.0.0.1:8091"}
`,
			want: []problem{
				{"engines.R.backends[0].address", `"localhost:50351" is the gateway's own listeners[0]`},
				{"engines.R.backends[1].address", `"127.0.0.1:50352" is the gateway's own listeners[1]`},
				{"engines.R.backends[4].address", `"127.0.0.1:8091" is the gateway's own admin listener`},
			},
		},
		{
			name: "admin listener on a listener's port",
			yaml: `
listeners:
  - {address: "127.0.0.1:50151", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
admin: {address: ":50151"}
`,
			want: []problem{{"admin.address", `":50151" is already used by listeners[0]`}},
		},
		{
			name: "admin listener on port 0 beside one on port 0",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
admin: {address: "127.0.0.1:0"}
`,
		},
		{
			name: "a second YAML document",
			yaml: `
listeners:
  - {address: "127.0.0.1:50051", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
---
log: {level: debug, bogus_key: 1}
`,
			want: []problem{{"invalid YAML", "the file has 2 documents, separated by ---, and only the first would be read"}},
		},
		{
			name: "a second YAML document that does not parse",
			yaml: `
listeners:
  - {address: "127.0.0.1:50051", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
---
log: {level: debug
`,
			want: []problem{{"invalid YAML", "after the first document, which alone would be read"}},
		},
		{
			name: "separators around one document",
			yaml: `---
listeners:
  - {address: "127.0.0.1:50051", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
---
`,
		},
		{
			name: "sizes that are not whole numbers of bytes",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {replay_buffer: 0.5, max_script_bytes: 1500.9, backends: [{address: "127.0.0.1:50055"}]}
limits: {max_message_size: 1e19}
`,
			want: []problem{
				{"engines.R.replay_buffer", "0.5 is not a whole number"},
				{"engines.R.max_script_bytes", "1500.9 is not a whole number"},
				{"limits.max_message_size", "10000000000000000000 is out of range"},
			},
		},
		{
			name: "port 0 never conflicts",
			yaml: `
listeners:
  - {address: ":0", insecure: true, insecure_remote: true}
  - {address: "127.0.0.1:0", insecure: true}
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
`,
		},
		{
			name: "different ports on one host",
			yaml: `
listeners:
  - {address: "127.0.0.1:50051", insecure: true}
  - {address: "127.0.0.1:50052", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
`,
		},
		{
			name: "no listeners",
			yaml: `
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
`,
			want: []problem{{"listeners", "none configured"}},
		},
		{
			name: "no engines",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
`,
			want: []problem{{"engines", "none configured"}},
		},
		{
			name: "engine without backends",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {hosts: [r.example]}
`,
			want: []problem{{"engines.R.backends", "none configured"}},
		},
		{
			name: "engine without a body",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true, engine: R}
engines:
  R:
  Py: {backends: [{address: "127.0.0.1:50055"}]}
`,
			want: []problem{{"engines.R.backends", "none configured"}},
		},
		{
			name: "listener address without port",
			yaml: `
listeners:
  - {address: "127.0.0.1", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
`,
			want: []problem{{"listeners[0].address", `invalid address "127.0.0.1"`}},
		},
		{
			name: "listener port out of range",
			yaml: `
listeners:
  - {address: "127.0.0.1:65536", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
`,
			want: []problem{{"listeners[0].address", `invalid port in "127.0.0.1:65536"`}},
		},
		{
			name: "listener port not a number",
			yaml: `
listeners:
  - {address: "127.0.0.1:grpc", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
`,
			want: []problem{{"listeners[0].address", `invalid port in "127.0.0.1:grpc"`}},
		},
		{
			name: "listener on a host name",
			yaml: `
listeners:
  - {address: "gw.example:50051", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
`,
			want: []problem{{"listeners[0].address", `invalid address "gw.example:50051"`}},
		},
		{
			name: "backend address without port",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {backends: [{address: "plugin.example"}]}
`,
			want: []problem{{"engines.R.backends[0].address", `invalid address "plugin.example"`}},
		},
		{
			name: "backend port not a number",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {backends: [{address: "plugin.example:grpc"}]}
`,
			want: []problem{{"engines.R.backends[0].address", `invalid port in "plugin.example:grpc"`}},
		},
		{
			name: "backend port with a sign",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {backends: [{address: "localhost:+50055"}]}
`,
			want: []problem{{"engines.R.backends[0].address", `invalid port in "localhost:+50055"`}},
		},
		{
			name: "backend host with a space",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {backends: [{address: "my host:50055"}]}
`,
			want: []problem{{"engines.R.backends[0].address", `invalid address "my host:50055": the host contains a space`}},
		},
		{
			name: "backend port 0",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:0"}]}
`,
			want: []problem{{"engines.R.backends[0].address", `invalid port in "127.0.0.1:0"`}},
		},
		{
			name: "backend with empty host",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {backends: [{address: ":50055"}]}
`,
			want: []problem{{"engines.R.backends[0].address", `invalid address ":50055"`}},
		},
		{
			name: "listener with neither tls nor insecure",
			yaml: `
listeners:
  - {address: "127.0.0.1:0"}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
`,
			want: []problem{{"listeners[0]", "set insecure: true"}},
		},
		{
			name: "listener with tls and insecure",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true, tls: {dir: /nonexistent}}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
`,
			want: []problem{{"listeners[0]", "both tls and insecure"}},
		},
		{
			name: "two engines claim one host",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  Py: {hosts: [py.example], backends: [{address: "127.0.0.1:50055"}]}
  R: {hosts: [r.example, PY.Example.], backends: [{address: "127.0.0.1:50056"}]}
`,
			want: []problem{{"engines.R.hosts[1]", `"PY.Example." is also a host of engine Py`}},
		},
		{
			name: "engine lists one host twice",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {hosts: [r.example, R.example], backends: [{address: "127.0.0.1:50055"}]}
`,
		},
		{
			name: "host with a port",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {hosts: ["r.example:50051"], backends: [{address: "127.0.0.1:50055"}]}
`,
			want: []problem{{"engines.R.hosts[0]", "is not a host name"}},
		},
		{
			name: "engine name starts with a digit",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  9Lives: {backends: [{address: "127.0.0.1:50055"}]}
`,
			want: []problem{{"engines.9Lives", "invalid engine name"}},
		},
		{
			name: "engine name with a hyphen",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  SSE-Python: {backends: [{address: "127.0.0.1:50055"}]}
`,
			want: []problem{{"engines.SSE-Python", "invalid engine name"}},
		},
		{
			name: "engine name with an underscore",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  _SSE_Python2: {backends: [{address: "127.0.0.1:50055"}]}
`,
		},
		{
			name: "backend listed twice",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R:
    backends:
      - address: "127.0.0.1:50055"
      - address: "127.0.0.1:50056"
      - address: "127.0.0.1:50055"
`,
			want: []problem{{"engines.R.backends[2].address", `"127.0.0.1:50055" is listed twice, also as backends[0]`}},
		},
		{
			name: "negative request timeout",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {request_timeout: -5s, backends: [{address: "127.0.0.1:50055"}]}
`,
			want: []problem{{"engines.R.request_timeout", "-5s is negative"}},
		},
		{
			name: "duration as a bare number",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {request_timeout: 30, backends: [{address: "127.0.0.1:50055"}]}
`,
			want: []problem{{"engines.R.request_timeout", "write 30s"}},
		},
		{
			name: "duration as a bare fraction",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {request_timeout: 1.5, backends: [{address: "127.0.0.1:50055"}]}
`,
			want: []problem{{"engines.R.request_timeout", "write 1.5s"}},
		},
		{
			name: "duration as a quoted bare number",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {request_timeout: "30", backends: [{address: "127.0.0.1:50055"}]}
`,
			want: []problem{{"engines.R.request_timeout", "duration 30 has no unit: write 30s for seconds"}},
		},
		{
			name: "negative count in an unsigned key",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
limits: {max_concurrent_streams: -1}
`,
			want: []problem{{"limits.max_concurrent_streams", "-1 is out of range: from 0 to 4294967295"}},
		},
		{
			name: "count over an unsigned key's range",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
limits: {max_concurrent_streams: 4294967297}
`,
			want: []problem{{"limits.max_concurrent_streams", "4294967297 is out of range"}},
		},
		{
			name: "every decoding problem, in several sections",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  A: {max_in_flight: 0.5, backends: [{address: "127.0.0.1:50055"}]}
  R: {request_timeout: 120, backends: [{address: "127.0.0.1:50056"}]}
limits: {max_concurrent_streams: -1}
`,
			want: []problem{
				{"engines.A.max_in_flight", "0.5 is not a whole number"},
				{"engines.R.request_timeout", "write 120s"},
				{"limits.max_concurrent_streams", "-1 is out of range"},
			},
		},
		{
			name: "decoding problem and the same entry's other problems",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  A: {max_in_flight: 0.5, balancer: random, backends: [{address: "127.0.0.1"}]}
`,
			want: []problem{
				{"engines.A.max_in_flight", "0.5 is not a whole number"},
				{"engines.A.balancer", `unknown balancer "random"`},
				{"engines.A.backends[0].address", `invalid address "127.0.0.1"`},
			},
		},
		{
			name: "count one past the largest signed 64-bit value",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
limits: {max_connections: 9223372036854775808}
`,
			want: []problem{{"limits.max_connections", "9223372036854775808 is out of range: from -9223372036854775808 to 9223372036854775807"}},
		},
		{
			name: "fraction in a count",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {max_in_flight: 0.5, backends: [{address: "127.0.0.1:50055"}]}
`,
			want: []problem{{"engines.R.max_in_flight", "0.5 is not a whole number"}},
		},
		{
			name: "duration 0 without unit",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {request_timeout: 0, backends: [{address: "127.0.0.1:50055"}]}
drain_timeout: 0
`,
		},
		{
			name: "0 for keys where 0 would take the default",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  SSEPython: {max_attempts: 0, replay_buffer: 0B, probe_interval: 0s, functions: {SumOfRows: {max_attempts: 0}}, backends: [{address: "127.0.0.1:50055"}]}
limits: {max_connections: 0}
keepalive: {min_ping_interval: 0s}
`,
			want: []problem{
				{"engines.SSEPython.probe_interval", "0 is not allowed; leave the key out for the default, 10s"},
				{"engines.SSEPython.replay_buffer", "0 is not allowed; leave the key out for the default, 8MiB"},
				{"engines.SSEPython.max_attempts", "0 is not allowed; leave the key out for the default, 3"},
				{"engines.SSEPython.functions.SumOfRows.max_attempts", "0 is not allowed; leave the key out for the default, the engine's max_attempts"},
				{"limits.max_connections", "0 is not allowed; leave the key out for the default, 1000"},
				{"keepalive.min_ping_interval", "0 is not allowed; leave the key out for the default, 5s"},
			},
		},
		{
			name: "misspelt engine key",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {request_timout: 5s, backends: [{address: "127.0.0.1:50055"}]}
`,
			want: []problem{{"engines.R", "unknown key request_timout; did you mean request_timeout?"}},
		},
		{
			name: "misspelt top-level key",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
limit: {max_message_size: 4MiB}
`,
			want: []problem{{"top level", "unknown key limit; did you mean limits?"}},
		},
		{
			name: "misspelt keys with empty values",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true, adress: }
engines:
  R: {backends: [{address: "127.0.0.1:50055", tsl: {}}], functions: {SumOfRows: {}}}
limts: {max_message_size: }
log: {levle: }
`,
			want: []problem{
				{"engines.R.backends[0]", "unknown key tsl; did you mean tls?"},
				{"listeners[0]", "unknown key adress; did you mean address?"},
				{"top level", "unknown key limts; did you mean limits?"},
				{"log", "unknown key levle; did you mean level?"},
			},
		},
		{
			name: "dotted, non-string and dash keys",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}], "-": x}
log.level: debug
limits.max_mesage_size: 1MiB
admin: {adress: , 1: }
`,
			want: []problem{
				{"admin", "unknown key 1; check its spelling"},
				{"admin", "unknown key adress; did you mean address?"},
				{"engines.R", "unknown key -; check its spelling"},
				{"limits", "unknown key max_mesage_size; did you mean max_message_size?"},
			},
		},
		{
			name: "keys in the wrong section",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true, hosts: [r.example]}
engines:
  R: {backends: [{address: "127.0.0.1:50055", tls: {client_ca_file: /tmp/ca.pem}}]}
`,
			want: []problem{
				{"engines.R.backends[0].tls", "unknown key client_ca_file; it belongs in listeners[].tls"},
				{"engines.R.backends[0].tls", "client TLS needs the CA that signed the server's certificate: set dir or ca_file"},
				{"listeners[0]", "unknown key hosts; it belongs in engines.<name>"},
			},
		},
		{
			name: "swapped letters and an unrelated key",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {hsots: [r.example], colour: blue, backends: [{address: "127.0.0.1:50055"}]}
`,
			want: []problem{
				{"engines.R", "unknown key colour; check its spelling"},
				{"engines.R", "unknown key hsots; did you mean hosts?"},
			},
		},
		{
			name: "unknown log level",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
log: {level: verbose}
`,
			want: []problem{{"log.level", `unknown level "verbose"`}},
		},
		{
			name: "unknown log format",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
log: {format: xml}
`,
			want: []problem{{"log.format", `unknown format "xml"`}},
		},
		{
			name: "max message size too small",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
limits: {max_message_size: 1000}
`,
			want: []problem{{"limits.max_message_size", "1000B is too small"}},
		},
		{
			name: "negative max message size",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
limits: {max_message_size: -4194304}
`,
			want: []problem{{"limits.max_message_size", "-4MiB is too small"}},
		},
		{
			name: "max message size without number",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
limits: {max_message_size: MiB}
`,
			want: []problem{{"limits.max_message_size", `invalid size "MiB"`}},
		},
		{
			name: "max message size too large",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
limits: {max_message_size: 2GiB}
`,
			want: []problem{{"limits.max_message_size", "2GiB is too large"}},
		},
		{
			name: "max header list size too small",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
limits: {max_header_list_size: 4KiB}
`,
			want: []problem{{"limits.max_header_list_size", "4KiB is out of range"}},
		},
		{
			name: "max header list size too large",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
limits: {max_header_list_size: 2GiB}
`,
			want: []problem{{"limits.max_header_list_size", "2GiB is out of range"}},
		},
		{
			name: "stream window too small for gRPC to keep",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
limits: {stream_window: 32KiB}
`,
			want: []problem{{"limits.stream_window", "32KiB is out of range"}},
		},
		{
			name: "stream window too large",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
limits: {stream_window: 128MiB}
`,
			want: []problem{{"limits.stream_window", "128MiB is out of range"}},
		},
		{
			name: "sizes at the limits",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
limits: {max_message_size: 1KiB, max_header_list_size: 1GiB}
`,
		},
		{
			name: "backend ping interval below 10s",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
keepalive: {backend_ping_interval: 9s}
`,
			want: []problem{{"keepalive.backend_ping_interval", "9s is below 10s"}},
		},
		{
			name: "negative min ping interval",
			yaml: `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
keepalive: {min_ping_interval: -1s}
`,
			want: []problem{{"keepalive.min_ping_interval", "-1s is negative"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Parse([]byte(tt.yaml), nil)
			checkProblems(t, err, tt.want)
		})
	}
}

// TestParseUndecodedValueReportedOnce checks that a value that fails to
// decode is reported under its own key only. The checks that combine it
// with other keys of its section report nothing, while the section's own
// problems are still reported.
func TestParseUndecodedValueReportedOnce(t *testing.T) {
	const engines = `
engines:
  R: {backends: [{address: "127.0.0.1:50055"}]}
`
	tests := []struct {
		name      string
		listeners string
		engines   string // the engines section, when not the default
		want      []problem
	}{
		{
			name:      "insecure neither true nor false",
			listeners: `[{address: "127.0.0.1:0", insecure: maybe}]`,
			want:      []problem{{"listeners[0].insecure", `"maybe" is not true or false`}},
		},
		{
			name:      "insecure_remote neither true nor false",
			listeners: `[{address: "0.0.0.0:50051", insecure: true, insecure_remote: maybe}]`,
			want:      []problem{{"listeners[0].insecure_remote", `"maybe" is not true or false`}},
		},
		{
			name:      "listener tls not a section",
			listeners: `[{address: "127.0.0.1:0", tls: 5}]`,
			want:      []problem{{"listeners[0].tls", "expected a map or struct"}},
		},
		{
			name:      "listener tls dir not a string",
			listeners: `[{address: "127.0.0.1:0", tls: {dir: [a, b]}}]`,
			want:      []problem{{"listeners[0].tls.dir", "expected type 'string'"}},
		},
		{
			name:      "backend tls dir not a string",
			listeners: `[{address: "127.0.0.1:0", insecure: true}]`,
			engines: `
engines:
  R: {backends: [{address: "127.0.0.1:50055", tls: {dir: [a]}}]}
`,
			want: []problem{{"engines.R.backends[0].tls.dir", "expected type 'string'"}},
		},
		{
			name:      "both tls and insecure still reported",
			listeners: `[{address: "127.0.0.1:0", insecure: true, tls: {dir: [a]}}]`,
			want: []problem{
				{"listeners[0].tls.dir", "expected type 'string'"},
				{"listeners[0]", "both tls and insecure"},
			},
		},
		{
			name:      "plaintext on every interface still reported",
			listeners: `[{address: "0.0.0.0:50051", insecure: true, engine: [R]}]`,
			want: []problem{
				{"listeners[0].engine", "expected type 'string'"},
				{"listeners[0]", "plaintext on \"0.0.0.0:50051\""},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			section := tt.engines
			if section == "" {
				section = engines
			}
			_, err := config.Parse([]byte("listeners: "+tt.listeners+"\n"+section), nil)
			checkProblems(t, err, tt.want)
		})
	}
}

// TestEndpointTrimmed checks that an OTLP endpoint loses the spaces
// around it, which the exporters would take as part of it.
func TestEndpointTrimmed(t *testing.T) {
	cfg, err := config.Parse([]byte(endpointCaseBase+`
telemetry:
  traces: {exporter: otlp, endpoint: "  collector:4317 "}
  metrics: {exporter: otlp-http, endpoint: " http://collector:4318 "}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Telemetry.Traces.Endpoint; got != "collector:4317" {
		t.Errorf("traces endpoint = %q, want collector:4317", got)
	}
	if got := cfg.Telemetry.Metrics.Endpoint; got != "http://collector:4318" {
		t.Errorf("metrics endpoint = %q, want http://collector:4318", got)
	}
}

// TestValidateReportsEveryProblem checks that one file with mistakes in
// several sections gets all of them reported together, one per line.
func TestValidateReportsEveryProblem(t *testing.T) {
	yaml := `
listeners:
  - {address: ":50051", insecure: true, insecure_remote: true, engine: SSEPython}
  - {address: "127.0.0.1:50051", insecure: true, engine: Nope}
  - {address: "127.0.0.1:0"}
engines:
  SSEPython:
    request_timeout: -1s
    hosts: [py.example]
    backends: [{address: "127.0.0.1:50055"}, {address: "127.0.0.1:50055"}]
  R:
    hosts: [PY.example]
limits: {max_message_size: 10, max_header_list_size: 1KiB}
log: {level: loud, format: xml}
`
	_, err := config.Parse([]byte(yaml), nil)
	checkProblems(t, err, []problem{
		{"listeners[1].address", "already used by listeners[0]"},
		{"listeners[1].engine", `unknown engine "Nope"; configured engines: R, SSEPython`},
		{"listeners[2]", "no tls section"},
		{"engines.R.backends", "none configured"},
		{"engines.SSEPython.hosts[0]", "also a host of engine R"},
		{"engines.SSEPython.request_timeout", "negative"},
		{"engines.SSEPython.backends[1].address", "listed twice"},
		{"limits.max_message_size", "too small"},
		{"limits.max_header_list_size", "out of range"},
		{"log.level", "unknown level"},
		{"log.format", "unknown format"},
	})
}

// TestValidateEngineNamesDifferingInCase checks that engine names equal
// but for case are reported, together with the file's other problems.
func TestValidateEngineNamesDifferingInCase(t *testing.T) {
	yaml := `
listeners:
  - {address: "127.0.0.1:0", insecure: true}
engines:
  SSEPython: {backends: [{address: "127.0.0.1:50055"}]}
  ssepython: {backends: [{address: "127.0.0.1:50056"}]}
log: {level: loud}
`
	_, err := config.Parse([]byte(yaml), nil)
	checkProblems(t, err, []problem{
		{"engines", `"SSEPython" and "ssepython" differ only in case`},
		{"log.level", `unknown level "loud"`},
	})
}

// TestValidateCertificates checks that each unusable certificate folder
// or file is reported under its key, naming the file at fault.
func TestValidateCertificates(t *testing.T) {
	tests := []struct {
		name string
		// setup breaks a fresh certificate set and returns the file's
		// listener and backend sections and the expected problems.
		setup func(t *testing.T, set tlsutil.Set) (listener, backend string, want []problem)
	}{
		{
			name: "valid folders",
			setup: func(t *testing.T, set tlsutil.Set) (string, string, []problem) {
				return tlsDir(set.GatewayDir), tlsDir(set.QlikDir), nil
			},
		},
		{
			name: "listener folder does not exist",
			setup: func(t *testing.T, set tlsutil.Set) (string, string, []problem) {
				dir := filepath.Join(set.GatewayDir, "missing")
				return tlsDir(dir), tlsDir(set.QlikDir), []problem{
					{"listeners[0].tls.dir", "folder " + dir + " not found"},
				}
			},
		},
		{
			name: "listener key missing",
			setup: func(t *testing.T, set tlsutil.Set) (string, string, []problem) {
				key := filepath.Join(set.GatewayDir, tlsutil.ServerKeyFile)
				removeFile(t, key)
				return tlsDir(set.GatewayDir), tlsDir(set.QlikDir), []problem{
					{"listeners[0].tls", key + ": no such file"},
				}
			},
		},
		{
			name: "listener key of another certificate",
			setup: func(t *testing.T, set tlsutil.Set) (string, string, []problem) {
				key := filepath.Join(set.GatewayDir, tlsutil.ServerKeyFile)
				copyFile(t, filepath.Join(set.QlikDir, tlsutil.ClientKeyFile), key)
				return tlsDir(set.GatewayDir), tlsDir(set.QlikDir), []problem{
					{"listeners[0].tls", key},
				}
			},
		},
		{
			name: "listener key not PEM",
			setup: func(t *testing.T, set tlsutil.Set) (string, string, []problem) {
				key := filepath.Join(set.GatewayDir, tlsutil.ServerKeyFile)
				writeFile(t, key, "not a key\n")
				return tlsDir(set.GatewayDir), tlsDir(set.QlikDir), []problem{
					{"listeners[0].tls", key},
				}
			},
		},
		{
			name: "listener key empty",
			setup: func(t *testing.T, set tlsutil.Set) (string, string, []problem) {
				key := filepath.Join(set.GatewayDir, tlsutil.ServerKeyFile)
				writeFile(t, key, "")
				return tlsDir(set.GatewayDir), tlsDir(set.QlikDir), []problem{
					{"listeners[0].tls", key + ": the file is empty"},
				}
			},
		},
		{
			name: "listener key unreadable",
			setup: func(t *testing.T, set tlsutil.Set) (string, string, []problem) {
				key := filepath.Join(set.GatewayDir, tlsutil.ServerKeyFile)
				if err := os.Chmod(key, 0); err != nil {
					t.Fatal(err)
				}
				// Root, and a process with CAP_DAC_OVERRIDE, read the file
				// regardless of its mode.
				if _, err := os.ReadFile(key); err == nil {
					t.Skip("this process can read files with mode 000, as root can")
				}
				return tlsDir(set.GatewayDir), tlsDir(set.QlikDir), []problem{
					{"listeners[0].tls", key + ": permission denied"},
				}
			},
		},
		{
			name: "listener explicit key file missing",
			setup: func(t *testing.T, set tlsutil.Set) (string, string, []problem) {
				key := filepath.Join(t.TempDir(), "gateway.key")
				listener := "{dir: " + quote(set.GatewayDir) + ", key_file: " + quote(key) + "}"
				return listener, tlsDir(set.QlikDir), []problem{
					{"listeners[0].tls", key + ": no such file"},
				}
			},
		},
		{
			name: "backend folder does not exist",
			setup: func(t *testing.T, set tlsutil.Set) (string, string, []problem) {
				dir := filepath.Join(set.QlikDir, "missing")
				return tlsDir(set.GatewayDir), tlsDir(dir), []problem{
					{"engines.R.backends[0].tls.dir", "folder " + dir + " not found"},
				}
			},
		},
		{
			name: "backend key of another certificate",
			setup: func(t *testing.T, set tlsutil.Set) (string, string, []problem) {
				key := filepath.Join(set.QlikDir, tlsutil.ClientKeyFile)
				copyFile(t, filepath.Join(set.GatewayDir, tlsutil.ServerKeyFile), key)
				return tlsDir(set.GatewayDir), tlsDir(set.QlikDir), []problem{
					{"engines.R.backends[0].tls", key},
				}
			},
		},
		{
			name: "backend CA not PEM",
			setup: func(t *testing.T, set tlsutil.Set) (string, string, []problem) {
				ca := filepath.Join(set.QlikDir, tlsutil.RootCertFile)
				writeFile(t, ca, "not a certificate\n")
				return tlsDir(set.GatewayDir), tlsDir(set.QlikDir), []problem{
					{"engines.R.backends[0].tls", ca + ": no valid certificate"},
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			listener, backend, want := tt.setup(t, writeCerts(t))
			yaml := `
listeners:
  - address: "127.0.0.1:0"
    tls: ` + listener + `
engines:
  R:
    backends:
      - address: "127.0.0.1:50055"
        tls: ` + backend + `
`
			_, err := config.Parse([]byte(yaml), nil)
			checkProblems(t, err, want)
		})
	}
}

// tlsDir returns a YAML tls section with only a dir key.
func tlsDir(dir string) string {
	return "{dir: " + quote(dir) + "}"
}

// quote returns s as a double-quoted YAML string.
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, to, string(data))
}

func removeFile(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

// TestValidateUnusableCertificates checks that a listener's certificate
// that has expired, and a backend's client certificate that is not valid
// yet, are listed by UnusableCertificates, and are no problem of the file:
// the gateway still serves its other listeners and engines.
func TestValidateUnusableCertificates(t *testing.T) {
	set := writeCerts(t)
	ca, err := tlsutil.LoadAuthority(filepath.Join(set.CADir, tlsutil.RootCertFile), filepath.Join(set.CADir, tlsutil.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	folder := func(name, certFile, keyFile string, usage x509.ExtKeyUsage, from time.Duration) string {
		cert, key, err := ca.Issue(tlsutil.LeafRequest{
			CommonName: name, Hosts: []string{"localhost"}, Usage: []x509.ExtKeyUsage{usage},
			NotBefore: time.Now().Add(from), NotAfter: time.Now().Add(from + 24*time.Hour),
		})
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		for name, data := range map[string][]byte{tlsutil.RootCertFile: tlsutil.EncodeCert(ca.Cert), certFile: cert, keyFile: key} {
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	yaml := `
listeners:
  - {address: "127.0.0.1:0", tls: {dir: ` + quote(folder("old", tlsutil.ServerCertFile, tlsutil.ServerKeyFile, x509.ExtKeyUsageServerAuth, -48*time.Hour)) + `}}
engines:
  R: {backends: [{address: "127.0.0.1:50055", tls: {dir: ` + quote(folder("future", tlsutil.ClientCertFile, tlsutil.ClientKeyFile, x509.ExtKeyUsageClientAuth, 24*time.Hour)) + `}}]}
`
	cfg, err := config.Parse([]byte(yaml), nil)
	if err != nil {
		t.Fatalf("Parse() error: %v", err)
	}
	warnings := cfg.UnusableCertificates(time.Now())
	for _, want := range []string{`listeners[0].tls: certificate "old" expired on`, `engines.R.backends[0].tls: certificate "future" is not valid before`} {
		if !slices.ContainsFunc(warnings, func(w string) bool { return strings.HasPrefix(w, want) }) {
			t.Errorf("UnusableCertificates() = %q, want one starting with %q", warnings, want)
		}
	}
	if len(warnings) != 2 {
		t.Errorf("UnusableCertificates() = %q, want 2", warnings)
	}
}

// TestUncoveredHosts checks that an engine host name that the certificate
// of no TLS listener lists is warned about, and that names the
// certificate lists, wildcards included, and plaintext listeners are not.
func TestUncoveredHosts(t *testing.T) {
	set, err := tlsutil.WriteSet(t.TempDir(), []string{"gw.example", "*.apps.example", "10.0.0.5"}, tlsutil.SetOptions{})
	if err != nil {
		t.Fatalf("WriteSet() error: %v", err)
	}
	parse := func(listener string) *config.Config {
		t.Helper()
		cfg, err := config.Parse([]byte(`
listeners:
  - `+listener+`
engines:
  Covered: {hosts: [GW.example, r.apps.example, 10.0.0.5], backends: [{address: "127.0.0.1:50055"}]}
  Missing: {hosts: [r.gw.example], backends: [{address: "127.0.0.1:50056"}]}
`), nil)
		if err != nil {
			t.Fatalf("Parse() error: %v", err)
		}
		return cfg
	}

	warnings := parse(`{address: "127.0.0.1:0", tls: {dir: ` + quote(set.GatewayDir) + `}}`).UncoveredHosts()
	want := "engines.Missing.hosts: r.gw.example is not a name in the certificate of listeners[0].tls"
	if len(warnings) != 1 || !strings.HasPrefix(warnings[0], want) {
		t.Errorf("UncoveredHosts() = %q, want one warning starting with %q", warnings, want)
	}
	if warnings := parse(`{address: "127.0.0.1:0", insecure: true}`).UncoveredHosts(); len(warnings) != 0 {
		t.Errorf("UncoveredHosts() with a plaintext listener = %q, want none", warnings)
	}
}

// TestValidateWholeSetFolder checks that a listener or a backend given
// the folder above a certificate set's gateway and qlik folders gets a
// problem naming the one to give.
func TestValidateWholeSetFolder(t *testing.T) {
	set := writeCerts(t)
	top := filepath.Dir(set.GatewayDir)
	_, err := config.Parse([]byte(`
listeners:
  - {address: "127.0.0.1:0", tls: {dir: `+quote(top)+`}}
engines:
  R: {backends: [{address: "127.0.0.1:50055", tls: {dir: `+quote(top)+`}}]}
`), nil)
	checkProblems(t, err, []problem{
		{"listeners[0].tls.dir", top + " is a whole certificate set, as ssegw certs init makes it; give its gateway folder, " + set.GatewayDir},
		{"engines.R.backends[0].tls.dir", top + " is a whole certificate set, as ssegw certs init makes it; give a client folder, such as its qlik folder " + set.QlikDir},
	})
}

// TestValidateSwappedFolders checks the problems of a listener given the
// Qlik client folder and a backend given the gateway's folder: one line
// each, saying which kind of folder it needs.
func TestValidateSwappedFolders(t *testing.T) {
	set := writeCerts(t)
	yaml := `
listeners:
  - {address: "127.0.0.1:0", tls: {dir: ` + quote(set.QlikDir) + `}}
engines:
  R: {backends: [{address: "127.0.0.1:50055", tls: {dir: ` + quote(set.GatewayDir) + `}}]}
`
	_, err := config.Parse([]byte(yaml), nil)
	checkProblems(t, err, []problem{
		{"listeners[0].tls.dir", set.QlikDir + " holds a client certificate (sse_client_cert.pem), as Qlik's folder does; a listener needs the gateway's folder"},
		{"engines.R.backends[0].tls.dir", set.GatewayDir + " holds a server certificate (sse_server_cert.pem), as the gateway's and a plugin's folders do; a backend needs a client folder"},
	})
	if err != nil && strings.Contains(err.Error(), "tls: listeners") {
		t.Errorf("Parse() error names a key twice:\n%v", err)
	}
}
