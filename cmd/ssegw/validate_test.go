package main

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/ssegw/ssegw/internal/shellquote"
	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/ssepb"
	"github.com/ssegw/ssegw/tlsutil"
)

// writeValidateConfig writes a configuration file into a new temporary
// folder and returns its path.
func writeValidateConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ssegw.yaml")
	ssetest.WriteFile(t, path, []byte(content))
	return path
}

// checkValidateExit fails the test unless err is the exit status want, where
// 0 means no error.
func checkValidateExit(t *testing.T, err error, want int, output string) {
	t.Helper()
	if want == 0 {
		if err != nil {
			t.Errorf("validate error = %v, want nil (exit status 0)\noutput:\n%s", err, output)
		}
		return
	}
	var exit exitError
	if !errors.As(err, &exit) {
		t.Errorf("validate error = %v, want exit status %d\noutput:\n%s", err, want, output)
		return
	}
	if exit.code != want {
		t.Errorf("validate exit status = %d, want %d\noutput:\n%s", exit.code, want, output)
	}
}

// validateOutputLines returns the lines of a command's output, without
// the empty line after the last newline.
func validateOutputLines(output string) []string {
	return strings.Split(strings.TrimSuffix(output, "\n"), "\n")
}

// TestValidateReportsEveryProblem checks that a file with mistakes in
// several sections gets each reported on its own line, and exit status 1.
func TestValidateReportsEveryProblem(t *testing.T) {
	path := writeValidateConfig(t, `
listeners:
  - address: 127.0.0.1:0
    insecure: true
    engine: Missing
  - address: 127.0.0.1:70000
    tls: { dir: no-such-folder }
engines:
  R:
    backends:
      - address: localhost
  Py: {}
log:
  level: loud
unknown_key: 1
`)
	output, err := runCommand(t, "validate", "--config", path)
	checkValidateExit(t, err, 1, output)

	want := []string{
		"config " + path + ":",
		"top level: unknown key unknown_key; check its spelling",
		`engines.Py.backends: none configured`,
		`engines.R.backends[0].address: invalid address "localhost"`,
		`listeners[0].engine: unknown engine "Missing"`,
		`listeners[1].address: invalid port in "127.0.0.1:70000"`,
		"listeners[1].tls.dir: folder " + filepath.Join(filepath.Dir(path), "no-such-folder") + " not found",
		`log.level: unknown level "loud"`,
	}
	lines := validateOutputLines(output)
	if len(lines) != len(want) {
		t.Errorf("validate output has %d lines, want %d:\n%s", len(lines), len(want), output)
	}
	for _, prefix := range want {
		found := false
		for _, line := range lines {
			if strings.HasPrefix(line, prefix) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("validate output has no line starting with %q:\n%s", prefix, output)
		}
	}
	if strings.Contains(output, ": valid:") {
		t.Errorf("validate output = %q, want no valid line for a file with problems", output)
	}
}

// TestValidateValidFile checks that a good file is reported valid with its
// listeners and engines, and exit status 0, without dialing anything.
func TestValidateValidFile(t *testing.T) {
	// Nothing listens on these backends: without --connect they are not
	// dialed.
	path := writeValidateConfig(t, `
listeners:
  - address: 127.0.0.1:0
    insecure: true
    engine: M
engines:
  R:
    backends:
      - address: 127.0.0.1:1
  Py:
    backends:
      - address: 127.0.0.1:2
  M:
    merge: [Py, R]
`)
	output, err := runCommand(t, "validate", "--config", path)
	checkValidateExit(t, err, 0, output)
	if want := path + ": valid: 1 listener, 3 engines (M, Py, R)\n"; output != want {
		t.Errorf("validate output = %q, want %q", output, want)
	}
}

// TestValidateChecksOpenTelemetryEnvironment checks that validate reports
// the OpenTelemetry variables that would stop serve at start, each on its
// own line naming the variable, with exit status 1. It also checks that
// validate goes on with its other checks, and that a file's own exporter
// takes the place of OTEL_TRACES_EXPORTER.
func TestValidateChecksOpenTelemetryEnvironment(t *testing.T) {
	file := `
listeners:
  - address: 127.0.0.1:0
    insecure: true
    engine: R
engines:
  R:
    backends:
      - address: 127.0.0.1:1
`
	path := writeValidateConfig(t, file)
	t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
	t.Setenv("OTEL_BSP_MAX_QUEUE_SIZE", "-1")
	t.Setenv("OTEL_METRICS_EXPORTER", "prom")
	output, err := runCommand(t, "validate", "--config", path)
	checkValidateExit(t, err, 1, output)
	want := []string{
		path + ": the file is valid, but serve would not start with this environment:",
		`telemetry.traces: environment variable OTEL_BSP_MAX_QUEUE_SIZE="-1" is invalid: want a whole number of spans from 1 to 2147483647`,
		`telemetry.metrics: environment variable OTEL_METRICS_EXPORTER="prom" is invalid: want one exporter of otlp, prometheus, console or none`,
	}
	if got := validateOutputLines(output); !slices.Equal(got, want) {
		t.Errorf("validate output:\n%s\nwant:\n%s", output, strings.Join(want, "\n"))
	}

	// --connect still dials the backends, where nothing listens.
	output, err = runCommand(t, "validate", "--config", path, "--connect", "--timeout", "2s")
	checkValidateExit(t, err, 1, output)
	if lines := validateOutputLines(output); len(lines) <= len(want) || !slices.Equal(lines[:len(want)], want) || !strings.Contains(output, "127.0.0.1:1") {
		t.Errorf("validate --connect output:\n%s\nwant the lines above, then the backend 127.0.0.1:1 reported", output)
	}

	// With the exporter in the file, OTEL_TRACES_EXPORTER is not read, and
	// with none, neither are the OTEL_BSP_* variables.
	t.Setenv("OTEL_TRACES_EXPORTER", "zipkin")
	t.Setenv("OTEL_METRICS_EXPORTER", "none")
	path = writeValidateConfig(t, file+"telemetry:\n  traces:\n    exporter: none\n")
	output, err = runCommand(t, "validate", "--config", path)
	checkValidateExit(t, err, 0, output)
}

// TestValidateWarnsUncoveredHost checks that validate warns about an
// engine host name missing from the TLS listener's certificate, and that
// the file stays valid: the gateway serves the engine's other names.
func TestValidateWarnsUncoveredHost(t *testing.T) {
	certs := ssetest.NewCerts(t)
	path := writeValidateConfig(t, `
listeners:
  - address: 127.0.0.1:0
    tls: {dir: `+certs.GatewayDir+`}
engines:
  R:
    hosts: [r.gw.test, r.other.example]
    backends:
      - address: 127.0.0.1:1
`)
	output, err := runCommand(t, "validate", "--config", path)
	checkValidateExit(t, err, 0, output)
	want := "warning: engines.R.hosts: r.other.example is not a name in the certificate of listeners[0].tls"
	if !strings.Contains(output, want) {
		t.Errorf("validate output = %q, want a line starting with %q", output, want)
	}
	if strings.Contains(output, "r.gw.test is not") {
		t.Errorf("validate output = %q, want no warning for r.gw.test, which the certificate lists", output)
	}
}

// TestValidateWarnsUnroutedEngine checks that validate warns about an
// engine that no call from Qlik can reach: no listener has it as its
// engine, and it has no hosts and is no merged engine's member. Such a file
// is valid, since tools can still call the engine by name, but Qlik's calls
// would end with Unimplemented. Engines reached in each of the other ways
// get no warning.
func TestValidateWarnsUnroutedEngine(t *testing.T) {
	path := writeValidateConfig(t, `
listeners:
  - address: 127.0.0.1:0
    insecure: true
    engine: byListener
engines:
  ByListener: {backends: [{address: "127.0.0.1:1"}]}
  ByHost: {hosts: [h.gw.test], backends: [{address: "127.0.0.1:2"}]}
  Member: {backends: [{address: "127.0.0.1:3"}]}
  Merged: {hosts: [m.gw.test], merge: [Member]}
  Lost: {backends: [{address: "127.0.0.1:4"}]}
`)
	output, err := runCommand(t, "validate", "--config", path)
	checkValidateExit(t, err, 0, output)
	var warnings []string
	for _, line := range validateOutputLines(output) {
		if strings.HasPrefix(line, "warning: ") {
			warnings = append(warnings, line)
		}
	}
	want := "warning: engines.Lost: no listener has it as its engine, it has no hosts, and no merged engine has it as a member"
	if len(warnings) != 1 || !strings.HasPrefix(warnings[0], want) {
		t.Errorf("validate warnings = %q, want one starting with %q", warnings, want)
	}
}

// TestValidateMergeProblems checks each mistake in a merged engine's
// section: each gives one line naming the key, and exit status 1.
func TestValidateMergeProblems(t *testing.T) {
	const base = `
listeners:
  - address: 127.0.0.1:0
    insecure: true
    engine: M
engines:
  A:
    backends:
      - address: 127.0.0.1:1
  B:
    backends:
      - address: 127.0.0.1:2
`
	tests := []struct {
		name    string
		engines string // more engines, indented as under engines:
		want    string // the start of the one problem; empty for none
	}{
		{
			name:    "valid merge with scripts",
			engines: "  M:\n    merge: [A, B]\n    merge_scripts: b\n",
		},
		{
			name:    "unknown member",
			engines: "  M:\n    merge: [A, Nope]\n",
			want:    `engines.M.merge[1]: unknown engine "Nope"; configured engines: A, B, M`,
		},
		{
			name:    "merging itself",
			engines: "  M:\n    merge: [A, M]\n",
			want:    "engines.M.merge[1]: an engine cannot merge itself",
		},
		{
			name:    "merging a merged engine",
			engines: "  N:\n    merge: [A, B]\n  M:\n    merge: [A, N]\n",
			want:    "engines.M.merge[1]: N is itself merged",
		},
		{
			name:    "backends and merge together",
			engines: "  M:\n    merge: [A, B]\n    backends:\n      - address: 127.0.0.1:3\n",
			want:    "engines.M: has both merge and backends",
		},
		{
			name:    "merge_scripts not a member",
			engines: "  M:\n    merge: [A]\n    merge_scripts: B\n",
			want:    `engines.M.merge_scripts: "B" is not one of the merged engines`,
		},
		{
			name:    "member listed twice",
			engines: "  M:\n    merge: [A, a]\n",
			want:    "engines.M.merge[1]: a is listed twice",
		},
		{
			name:    "merge_prefix without the engine",
			engines: "  M:\n    merge: [A, B]\n    merge_prefix: X_\n",
			want:    `engines.M.merge_prefix: "X_" lacks {engine}`,
		},
		{
			name:    "merge_prefix with a space",
			engines: "  M:\n    merge: [A, B]\n    merge_prefix: \"{engine} \"\n",
			want:    `engines.M.merge_prefix: "{engine} " has characters other than letters, digits and _`,
		},
		{
			name:    "merge_prefix of letters, digits and _",
			engines: "  M:\n    merge: [A, B]\n    merge_prefix: \"x2_{engine}_\"\n",
		},
		{
			name:    "request_timeout on a merged engine",
			engines: "  M:\n    merge: [A, B]\n    request_timeout: 1s\n",
			want:    "engines.M.request_timeout: has no effect on a merged engine, whose calls run under the settings of the member they reach; set it on the members (A, B)",
		},
		{
			name:    "function policy on a merged engine",
			engines: "  M:\n    merge: [A, B]\n    functions:\n      Echo: { replay: false }\n",
			want:    "engines.M.functions: has no effect on a merged engine",
		},
		{
			name:    "reconnect_buffer on a merged engine",
			engines: "  M:\n    merge: [A, B]\n    reconnect_buffer: 5s\n",
			want:    "engines.M.reconnect_buffer: has no effect on a merged engine",
		},
		{
			name:    "merge_scripts without merge",
			engines: "  M:\n    backends:\n      - address: 127.0.0.1:3\n    merge_scripts: A\n",
			want:    "engines.M.merge_scripts: applies only to an engine with merge",
		},
		{
			name:    "admission settings on a merged engine",
			engines: "  M:\n    merge: [A, B]\n    scripts: deny\n    max_cardinality: 10\n    max_waiting: 5\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeValidateConfig(t, base+tt.engines)
			output, err := runCommand(t, "validate", "--config", path)
			lines := validateOutputLines(output)
			if tt.want == "" {
				checkValidateExit(t, err, 0, output)
				if want := path + ": valid: 1 listener, 3 engines (A, B, M)"; len(lines) != 1 || lines[0] != want {
					t.Errorf("validate output = %q, want %q", output, want)
				}
				return
			}
			checkValidateExit(t, err, 1, output)
			if len(lines) != 2 {
				t.Errorf("validate output has %d lines, want 2, the file and one problem:\n%s", len(lines), output)
			}
			if len(lines) > 1 && !strings.HasPrefix(lines[1], tt.want) {
				t.Errorf("validate problem = %q, want it to start with %q", lines[1], tt.want)
			}
		})
	}
}

// validateFunction returns a scalar numeric function definition with one
// numeric parameter.
func validateFunction(id int32, name string) *ssepb.FunctionDefinition {
	return &ssepb.FunctionDefinition{
		FunctionId: id, Name: name,
		FunctionType: ssepb.FunctionType_SCALAR, ReturnType: ssepb.DataType_NUMERIC,
		Params: []*ssepb.Parameter{{Name: "x", DataType: ssepb.DataType_NUMERIC}},
	}
}

// startValidatePlugin starts a test plugin whose GetCapabilities returns
// functions, with identifier as the plugin's name.
func startValidatePlugin(t *testing.T, identifier string, functions ...*ssepb.FunctionDefinition) *ssetest.Plugin {
	t.Helper()
	return ssetest.StartPlugin(t, &ssetest.Connector{
		Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
			return &ssepb.Capabilities{AllowScript: true, PluginIdentifier: identifier, PluginVersion: "1.0.0", Functions: functions}, nil
		},
	})
}

// validateConnectConfig returns a configuration with engine R at
// backends, and engine M merging R.
func validateConnectConfig(backends ...string) string {
	var text strings.Builder
	text.WriteString("listeners:\n  - address: 127.0.0.1:0\n    insecure: true\n    engine: M\nengines:\n  R:\n    backends:\n")
	for _, backend := range backends {
		fmt.Fprintf(&text, "      - address: %s\n", backend)
	}
	text.WriteString("  M:\n    merge: [R]\n")
	return text.String()
}

// TestValidateConnect checks validate --connect against real plugins:
// replicas with equal functions are each reported ok, replicas with other
// functions are reported as disagreeing at the differing function ids,
// and an unreachable one as failed within the timeout.
func TestValidateConnect(t *testing.T) {
	forecast, smooth := validateFunction(0, "Forecast"), validateFunction(1, "Smooth")
	first := startValidatePlugin(t, "plugin-1", forecast, smooth)

	t.Run("replicas agree", func(t *testing.T) {
		// Replicas of one plugin may name themselves differently.
		second := startValidatePlugin(t, "plugin-2", forecast, smooth)
		path := writeValidateConfig(t, validateConnectConfig(first.Addr, second.Addr))
		output, err := runCommand(t, "validate", "--config", path, "--connect", "--timeout", "10s")
		checkValidateExit(t, err, 0, output)
		want := []string{
			path + ": valid: 1 listener, 2 engines (M, R)",
			"engine M merges R",
			"engine R",
			"  " + first.Addr + ": ok: plugin-1 1.0.0, 2 functions, scripts true",
			"  " + second.Addr + ": ok: plugin-2 1.0.0, 2 functions, scripts true",
		}
		if got := validateOutputLines(output); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("validate --connect output:\n%s\nwant:\n%s", output, strings.Join(want, "\n"))
		}
	})

	t.Run("replicas disagree", func(t *testing.T) {
		// Function 1 is missing and function 2 is new.
		second := startValidatePlugin(t, "plugin-2", forecast, validateFunction(2, "Trend"))
		path := writeValidateConfig(t, validateConnectConfig(first.Addr, second.Addr))
		output, err := runCommand(t, "validate", "--config", path, "--connect", "--timeout", "10s")
		checkValidateExit(t, err, 1, output)
		want := "  " + second.Addr + ": DISAGREES with " + first.Addr + " at function ids [1 2]"
		if !strings.Contains(output, want) {
			t.Errorf("validate --connect output:\n%s\nwant a line starting %q", output, want)
		}
		if want := "  " + second.Addr + ": ok: plugin-2 1.0.0, 2 functions"; !strings.Contains(output, want) {
			t.Errorf("validate --connect output:\n%s\nwant the disagreeing replica's answer %q", output, want)
		}
	})

	t.Run("duplicate function ids", func(t *testing.T) {
		// Without a version, and with id 0 twice: the line has no space
		// before its comma, and the ids are an error.
		only := ssetest.StartPlugin(t, &ssetest.Connector{
			Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
				return &ssepb.Capabilities{PluginIdentifier: "dup", Functions: []*ssepb.FunctionDefinition{
					validateFunction(0, "A"), validateFunction(1, "B"), validateFunction(0, "C"),
				}}, nil
			},
		})
		path := writeValidateConfig(t, validateConnectConfig(only.Addr))
		output, err := runCommand(t, "validate", "--config", path, "--connect", "--timeout", "10s")
		checkValidateExit(t, err, 1, output)
		for _, want := range []string{
			"  " + only.Addr + ": ok: dup, 3 functions, scripts false\n",
			"    ERROR: function ids listed more than once: 0 (A, C)\n",
		} {
			if !strings.Contains(output, want) {
				t.Errorf("validate --connect output:\n%s\nwant the line %q", output, want)
			}
		}
	})

	t.Run("merged ids out of range", func(t *testing.T) {
		big := startValidatePlugin(t, "big", forecast, validateFunction(1500, "Big"))
		path := writeValidateConfig(t, validateConnectConfig(big.Addr))
		output, err := runCommand(t, "validate", "--config", path, "--connect", "--timeout", "10s")
		checkValidateExit(t, err, 0, output)
		if want := "engine M: WARNING: leaves out R: Big (1500), since a member's function ids must be from 0 to 999 to be merged\n"; !strings.Contains(output, want) {
			t.Errorf("validate --connect output:\n%s\nwant the line %q", output, want)
		}
	})

	t.Run("replica with scripts off", func(t *testing.T) {
		second := ssetest.StartPlugin(t, &ssetest.Connector{
			Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
				return &ssepb.Capabilities{AllowScript: false, PluginIdentifier: "plugin-2", PluginVersion: "1.0.0", Functions: []*ssepb.FunctionDefinition{forecast, smooth}}, nil
			},
		})
		path := writeValidateConfig(t, validateConnectConfig(first.Addr, second.Addr))
		output, err := runCommand(t, "validate", "--config", path, "--connect", "--timeout", "10s")
		checkValidateExit(t, err, 1, output)
		want := "  " + second.Addr + ": DISAGREES with " + first.Addr + " on allowScript (false here, true there);"
		if !strings.Contains(output, want) {
			t.Errorf("validate --connect output:\n%s\nwant a line starting %q", output, want)
		}
	})

	t.Run("replica with another function definition", func(t *testing.T) {
		// The same id and name with another return type.
		changed := validateFunction(1, "Smooth")
		changed.ReturnType = ssepb.DataType_STRING
		second := startValidatePlugin(t, "plugin-2", forecast, changed)
		path := writeValidateConfig(t, validateConnectConfig(first.Addr, second.Addr))
		output, err := runCommand(t, "validate", "--config", path, "--connect", "--timeout", "10s")
		checkValidateExit(t, err, 1, output)
		want := "  " + second.Addr + ": DISAGREES with " + first.Addr + " at function ids [1]"
		if !strings.Contains(output, want) {
			t.Errorf("validate --connect output:\n%s\nwant a line starting %q", output, want)
		}
	})

	t.Run("dns backend", func(t *testing.T) {
		// Each address the name resolves to is a replica of its own, as
		// in the gateway. localhost may also resolve to ::1, where no
		// plugin listens, so only the lines are checked, not the result.
		_, port, err := net.SplitHostPort(first.Addr)
		if err != nil {
			t.Fatal(err)
		}
		path := writeValidateConfig(t, "listeners:\n  - address: 127.0.0.1:0\n    insecure: true\n"+
			"engines:\n  R:\n    backends:\n      - address: localhost:"+port+"\n        dns: true\n")
		output, _ := runCommand(t, "validate", "--config", path, "--connect", "--timeout", "10s")
		addresses, err := net.DefaultResolver.LookupHost(t.Context(), "localhost")
		if err != nil {
			t.Fatal(err)
		}
		for _, address := range addresses {
			if want := "\n  " + net.JoinHostPort(address, port) + ": "; !strings.Contains(output, want) {
				t.Errorf("validate --connect output:\n%s\nwant a line for %s", output, net.JoinHostPort(address, port))
			}
		}
		if want := "  127.0.0.1:" + port + ": ok: plugin-1"; !strings.Contains(output, want) {
			t.Errorf("validate --connect output:\n%s\nwant %q", output, want)
		}
	})

	t.Run("refused connection", func(t *testing.T) {
		refused := ssetest.FreeAddress(t)
		path := writeValidateConfig(t, validateConnectConfig(first.Addr, refused))
		output, err := runCommand(t, "validate", "--config", path, "--connect", "--timeout", "1m")
		checkValidateExit(t, err, 1, output)
		want := "  " + refused + ": FAILED: cannot connect: "
		if !strings.Contains(output, want) || !strings.Contains(output, "connection refused") {
			t.Errorf("validate --connect output:\n%s\nwant a line starting %q that names the refused connection", output, want)
		}
		if want := "    Nothing listens at this address: check that the plugin runs"; !strings.Contains(output, want) {
			t.Errorf("validate --connect output:\n%s\nwant the hint %q", output, want)
		}
		if want := "  " + first.Addr + ": ok: plugin-1"; !strings.Contains(output, want) {
			t.Errorf("validate --connect output:\n%s\nwant the reachable replica reported %q", output, want)
		}
	})

	t.Run("slow replica", func(t *testing.T) {
		// The plugin accepts the connection and the call, but returns
		// only after the call has ended.
		slow := ssetest.StartPlugin(t, &ssetest.Connector{
			Capabilities: func(ctx context.Context, _ *ssepb.Empty) (*ssepb.Capabilities, error) {
				<-ctx.Done()
				return nil, ctx.Err()
			},
		})
		path := writeValidateConfig(t, validateConnectConfig(first.Addr, slow.Addr))
		output, err := runCommand(t, "validate", "--config", path, "--connect", "--timeout", "1s")
		checkValidateExit(t, err, 1, output)
		want := "  " + slow.Addr + ": FAILED: connected, but the plugin did not respond to GetCapabilities within --timeout 1s"
		if !strings.Contains(output, want) {
			t.Errorf("validate --connect output:\n%s\nwant a line starting %q", output, want)
		}
		if want := "check it again with a larger --timeout"; !strings.Contains(output, want) {
			t.Errorf("validate --connect output:\n%s\nwant the advice %q", output, want)
		}
		if unwanted := "check the address"; strings.Contains(output, unwanted) {
			t.Errorf("validate --connect output:\n%s\nwant no advice to %q: the connection was made", output, unwanted)
		}
	})

	t.Run("replica failing with its own timeout", func(t *testing.T) {
		// DeadlineExceeded at once, from a deadline of the plugin's own,
		// is its answer, not a late one.
		failing := ssetest.StartPlugin(t, &ssetest.Connector{
			Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
				return nil, status.Error(codes.DeadlineExceeded, "backend database timed out")
			},
		})
		path := writeValidateConfig(t, validateConnectConfig(first.Addr, failing.Addr))
		output, err := runCommand(t, "validate", "--config", path, "--connect", "--timeout", "10s")
		checkValidateExit(t, err, 1, output)
		if want := "  " + failing.Addr + ": FAILED: rpc error: code = DeadlineExceeded desc = backend database timed out"; !strings.Contains(output, want) {
			t.Errorf("validate --connect output:\n%s\nwant a line starting %q", output, want)
		}
		if unwanted := "larger --timeout"; strings.Contains(output, unwanted) {
			t.Errorf("validate --connect output:\n%s\nwant no advice for a %q: the plugin answered at once", output, unwanted)
		}
	})

	t.Run("silent replica", func(t *testing.T) {
		// A listener that never accepts: the connection is made but no
		// plugin ever answers, so only --timeout ends the check.
		silent, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { silent.Close() })
		path := writeValidateConfig(t, validateConnectConfig(first.Addr, silent.Addr().String()))
		const timeout = 500 * time.Millisecond
		output, err := runCommand(t, "validate", "--config", path, "--connect", "--timeout", timeout.String())
		checkValidateExit(t, err, 1, output)
		want := "  " + silent.Addr().String() + ": FAILED: no answer within " + timeout.String()
		if !strings.Contains(output, want) {
			t.Errorf("validate --connect output:\n%s\nwant a line starting %q", output, want)
		}
	})
}

// TestValidateConnectTLS checks validate --connect against plugins that
// require mutual TLS, with the backend's certificate folder in Qlik's
// client layout. Each replica must be reported ok, whether it is reached
// by an IPv4 address, an IPv6 address or a server_name, as the gateway
// reaches it.
func TestValidateConnectTLS(t *testing.T) {
	certs := ssetest.NewCerts(t)
	serverTLS, err := tlsutil.ServerFilesInDir(certs.GatewayDir, "", "", "").ServerConfig()
	if err != nil {
		t.Fatalf("plugin TLS: %v", err)
	}
	tests := []struct {
		name       string
		listen     string
		serverName string
	}{
		{name: "IPv4 address", listen: "127.0.0.1:0"},
		{name: "IPv6 address", listen: "[::1]:0"},
		{name: "server_name", listen: "127.0.0.1:0", serverName: "localhost"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plugin := ssetest.StartPluginAt(t, tt.listen, &ssetest.Connector{
				Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
					return &ssepb.Capabilities{PluginIdentifier: "tls-plugin", PluginVersion: "1.0.0", Functions: []*ssepb.FunctionDefinition{validateFunction(0, "Forecast")}}, nil
				},
			}, grpc.Creds(credentials.NewTLS(serverTLS)))
			tls := fmt.Sprintf("{ dir: %q }", certs.QlikDir)
			if tt.serverName != "" {
				tls = fmt.Sprintf("{ dir: %q, server_name: %s }", certs.QlikDir, tt.serverName)
			}
			path := writeValidateConfig(t, fmt.Sprintf("listeners:\n  - address: 127.0.0.1:0\n    insecure: true\nengines:\n  R:\n    backends:\n      - address: %q\n        tls: %s\n", plugin.Addr, tls))

			output, err := runCommand(t, "validate", "--config", path, "--connect", "--timeout", "5s")
			checkValidateExit(t, err, 0, output)
			if want := "  " + plugin.Addr + ": ok: tls-plugin 1.0.0, 1 functions, scripts false\n"; !strings.Contains(output, want) {
				t.Errorf("validate --connect output:\n%s\nwant the line %q", output, want)
			}
		})
	}
}

// TestValidateConnectTLSHints checks the hint under a TLS backend that
// fails the handshake: a server_name the plugin's certificate does not
// list, a CA that did not sign it, and a client certificate the plugin
// does not trust.
func TestValidateConnectTLSHints(t *testing.T) {
	certs := ssetest.NewCerts(t)
	serverTLS, err := tlsutil.ServerFilesInDir(certs.GatewayDir, "", "", "").ServerConfig()
	if err != nil {
		t.Fatalf("plugin TLS: %v", err)
	}
	plugin := ssetest.StartPluginAt(t, "127.0.0.1:0", &ssetest.Connector{}, grpc.Creds(credentials.NewTLS(serverTLS)))
	tests := []struct {
		name, tls, want string
		// wantAny, if set, lists texts of which the output must hold one.
		wantAny []string
	}{
		{
			name: "name not listed",
			tls:  fmt.Sprintf("{ dir: %q, server_name: other.example }", certs.QlikDir),
			want: "    The plugin's certificate does not list tls.server_name other.example; change it to a name the certificate lists",
		},
		{
			name: "another CA",
			tls:  fmt.Sprintf("{ dir: %q }", ssetest.NewCerts(t).QlikDir),
			want: "    The plugin's certificate is not signed by the CA of the backend's tls section",
		},
		{
			name: "client certificate of another CA",
			tls:  fmt.Sprintf("{ dir: %q }", certs.ClientDir(t, ssetest.NewCerts(t).CA, tlsutil.LeafRequest{})),
			// The plugin's alert, or with TLS 1.3 only a closed
			// connection, depending on timing.
			wantAny: []string{"\n    The plugin rejected the gateway's client certificate", "\n    The connection closed during the handshake: the plugin may have rejected the gateway's client certificate"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeValidateConfig(t, fmt.Sprintf("listeners:\n  - address: 127.0.0.1:0\n    insecure: true\nengines:\n  R:\n    backends:\n      - address: %q\n        tls: %s\n", plugin.Addr, tt.tls))
			output, err := runCommand(t, "validate", "--config", path, "--connect", "--timeout", "5s")
			checkValidateExit(t, err, 1, output)
			if tt.want != "" && !strings.Contains(output, "\n"+tt.want) {
				t.Errorf("validate --connect output:\n%s\nwant a line starting %q", output, tt.want)
			}
			if len(tt.wantAny) > 0 && !slices.ContainsFunc(tt.wantAny, func(want string) bool { return strings.Contains(output, want) }) {
				t.Errorf("validate --connect output:\n%s\nwant one of %q", output, tt.wantAny)
			}
		})
	}
}

// TestValidateRejectsTimeout checks that a --timeout that is not positive,
// which would fail every backend at once, is rejected before anything is
// read or dialed.
func TestValidateRejectsTimeout(t *testing.T) {
	path := writeValidateConfig(t, "listeners: [{address: '127.0.0.1:0', insecure: true}]\nengines: {R: {backends: [{address: '127.0.0.1:1'}]}}\n")
	for _, timeout := range []string{"0s", "-1s"} {
		output, err := runCommand(t, "validate", "--config", path, "--connect", "--timeout", timeout)
		if err == nil || !strings.Contains(err.Error(), "invalid --timeout "+timeout) {
			t.Errorf("validate --timeout %s error = %v, want one naming the invalid --timeout", timeout, err)
		}
		if output != "" {
			t.Errorf("validate --timeout %s output = %q, want nothing", timeout, output)
		}
	}
}

// TestValidateRejectsFolder checks that validate rejects a folder given as
// the configuration file, with exit status 1, and names it.
func TestValidateRejectsFolder(t *testing.T) {
	dir := t.TempDir()
	output, err := runCommand(t, "validate", "--config", dir)
	checkValidateExit(t, err, 1, output)
	if want := dir + " is a folder, not a regular file"; !strings.Contains(output, want) {
		t.Errorf("validate output = %q, want it to contain %q", output, want)
	}
}

// TestValidateNamesEncryptedKey checks that validate reports an encrypted
// key of a listener as encrypted, with the file and how to decrypt it,
// rather than as a key that crypto/tls failed to parse.
func TestValidateNamesEncryptedKey(t *testing.T) {
	certs := ssetest.NewCerts(t)
	key := filepath.Join(certs.GatewayDir, tlsutil.ServerKeyFile)
	encrypted := pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte("not decrypted")})
	ssetest.ReplaceFile(t, key, encrypted)
	path := writeValidateConfig(t, "listeners:\n  - address: 127.0.0.1:0\n    tls: {dir: '"+certs.GatewayDir+"'}\n"+
		"engines:\n  R:\n    backends:\n      - address: 127.0.0.1:1\n")

	output, err := runCommand(t, "validate", "--config", path)
	checkValidateExit(t, err, 1, output)
	want := "listeners[0].tls: server key " + key + ` is encrypted (PEM block "ENCRYPTED PRIVATE KEY"), but ssegw needs an unencrypted key`
	if !strings.Contains(output, want) {
		t.Errorf("validate output:\n%s\nwant it to contain %q", output, want)
	}
	if want := "openssl pkey -in " + shellquote.Quote(key); !strings.Contains(output, want) {
		t.Errorf("validate output:\n%s\nwant the advice %q", output, want)
	}
	if unwanted := "failed to parse private key"; strings.Contains(output, unwanted) {
		t.Errorf("validate output:\n%s\nwant no %q", output, unwanted)
	}
}

// TestValidateHintsConfigFlag checks that a configuration file given as an
// argument, rather than with --config, gets a hint at --config, and that
// another argument is still an unknown command.
func TestValidateHintsConfigFlag(t *testing.T) {
	// An existing file counts whatever its name.
	existing := filepath.Join(t.TempDir(), "gateway.conf")
	ssetest.WriteFile(t, existing, []byte("listeners: []\n"))
	tests := []struct {
		argument string
		want     string
	}{
		{"v1.yaml", `unexpected argument "v1.yaml": validate takes the configuration file with --config, as in ssegw validate --config v1.yaml`},
		{"gateway.YML", `unexpected argument "gateway.YML": validate takes the configuration file with --config`},
		{existing, "unexpected argument " + fmt.Sprintf("%q", existing) + ": validate takes the configuration file with --config, as in ssegw validate --config " + existing},
		{"my config.yaml", "as in ssegw validate --config " + shellquote.Quote("my config.yaml")},
		{"connect", `unknown command "connect" for "ssegw validate"`},
	}
	for _, tt := range tests {
		output, err := runCommand(t, "validate", tt.argument)
		if err == nil {
			t.Errorf("validate %s succeeded, want an error; output:\n%s", tt.argument, output)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("validate %s error = %q, want it to contain %q", tt.argument, err, tt.want)
		}
	}
}

// TestValidateMissingDefaultConfig checks that validate without --config,
// in a folder without config.yaml, names the folder it looked in and how
// to name another file, and that an explicit --config keeps the plain error.
func TestValidateMissingDefaultConfig(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	output, err := runCommand(t, "validate")
	checkValidateExit(t, err, 1, output)
	wantDir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"config.yaml does not exist in the working directory, " + wantDir,
		"config.yaml there is the default configuration file, and --config FILE names another",
	} {
		if !strings.Contains(output, want) {
			t.Errorf("validate output = %q, want it to contain %q", output, want)
		}
	}

	output, err = runCommand(t, "validate", "--config", "other.yaml")
	checkValidateExit(t, err, 1, output)
	if want := "reading config: stat other.yaml: "; !strings.Contains(output, want) {
		t.Errorf("validate --config other.yaml output = %q, want it to contain %q", output, want)
	}
	if strings.Contains(output, "working directory") {
		t.Errorf("validate --config other.yaml output = %q, want no hint about the default file", output)
	}
}
