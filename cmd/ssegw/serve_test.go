package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/ssepb"
	"github.com/ssegw/ssegw/tlsutil"
)

// TestMain deletes the ssegw binary that the tests build.
func TestMain(m *testing.M) {
	code := m.Run()
	ssetest.RemoveBinaries()
	os.Exit(code)
}

// writeConfig writes a configuration file and returns its path.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	if !strings.Contains(text, "\nadmin:") {
		// Tests in other packages run gateways at the same time, so the
		// admin listener takes a free port instead of the default one.
		text += "\nadmin: {address: \"127.0.0.1:0\"}\n"
	}
	path := filepath.Join(t.TempDir(), "ssegw.yaml")
	ssetest.WriteFile(t, path, []byte(text))
	return path
}

// startServePlugin starts a test plugin whose GetCapabilities returns
// identifier as its pluginIdentifier.
func startServePlugin(t *testing.T, identifier string) *ssetest.Plugin {
	t.Helper()
	return ssetest.StartPlugin(t, &ssetest.Connector{
		Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
			return &ssepb.Capabilities{PluginIdentifier: identifier}, nil
		},
	})
}

// watchPort dials address every millisecond until the returned stop is
// called. Then stop reports whether any dial was accepted. It polls
// because a listener that another process opens and closes again sends
// no notification that a test could wait on.
func watchPort(address string) (stop func() bool) {
	done := make(chan struct{})
	result := make(chan bool, 1)
	go func() {
		accepted := false
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			if conn, err := net.DialTimeout("tcp", address, 100*time.Millisecond); err == nil {
				accepted = true
				conn.Close()
			}
			select {
			case <-done:
				result <- accepted
				return
			case <-tick.C:
			}
		}
	}()
	return func() bool {
		close(done)
		return <-result
	}
}

// exitCode returns the exit status that Process.Wait reported as err.
func exitCode(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		t.Fatalf("waiting for ssegw: %v", err)
	}
	return exitErr.ExitCode()
}

// failedRun is what a run of ssegw serve that stopped on its own left
// behind.
type failedRun struct {
	exitCode int
	// elapsed runs from just before the process started to its exit.
	elapsed time.Duration
	stderr  string
	// accepted reports whether a connection to the watched address was
	// accepted while ssegw ran.
	accepted bool
}

// serveUntilExit runs ssegw serve with the configuration text while
// dialing address, and waits up to 10s for it to exit.
func serveUntilExit(t *testing.T, text, address string, env ...string) failedRun {
	t.Helper()
	binary := ssetest.Binary(t, "./cmd/ssegw")
	configFile := writeConfig(t, text)

	stopWatching := watchPort(address)
	start := time.Now()
	p := ssetest.StartProcess(t, binary, env, "serve", "--config", configFile)
	err := p.Wait(t, 10*time.Second)
	run := failedRun{elapsed: time.Since(start), stderr: p.Stderr()}
	run.accepted = stopWatching()
	run.exitCode = exitCode(t, err)
	return run
}

// checkRefused checks that a connection to address is refused.
func checkRefused(t *testing.T, address string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", address, time.Second)
	if err == nil {
		conn.Close()
		t.Errorf("Dial(%s) after ssegw exited succeeded, want connection refused", address)
		return
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("Dial(%s) after ssegw exited: %v, want connection refused", address, err)
	}
}

// TestServeRejectsBadTLSFolder checks that serve exits with an error
// within 2s, naming the file, when a TLS listener's certificate folder is
// missing, lacks the server key or holds an unreadable key, and that the
// port never accepts a connection. Elsewhere a plugin that was not told
// where its server certificates were started in plaintext (C04).
func TestServeRejectsBadTLSFolder(t *testing.T) {
	certs := ssetest.NewCerts(t)
	plugin := startServePlugin(t, "plugin-py")

	// copyGatewayDir copies the gateway's folder without the files in skip.
	copyGatewayDir := func(t *testing.T, skip ...string) string {
		t.Helper()
		dir := t.TempDir()
		for _, name := range []string{tlsutil.RootCertFile, tlsutil.ServerCertFile, tlsutil.ServerKeyFile} {
			if slices.Contains(skip, name) {
				continue
			}
			data, err := os.ReadFile(filepath.Join(certs.GatewayDir, name))
			if err != nil {
				t.Fatal(err)
			}
			ssetest.WriteFile(t, filepath.Join(dir, name), data)
		}
		return dir
	}

	tests := []struct {
		name string
		// folder returns the listener's tls.dir and the file that the
		// error must name.
		folder func(t *testing.T) (dir, badFile string)
	}{
		{
			name: "folder does not exist",
			folder: func(t *testing.T) (string, string) {
				// The folder itself is named, once, rather than each file.
				dir := filepath.Join(t.TempDir(), "no-such-folder")
				return dir, dir
			},
		},
		{
			name: "no server key",
			folder: func(t *testing.T) (string, string) {
				dir := copyGatewayDir(t, tlsutil.ServerKeyFile)
				return dir, filepath.Join(dir, tlsutil.ServerKeyFile)
			},
		},
		{
			// Tests may run as root, which reads a file of mode 000, so
			// the key is made unreadable by its content.
			name: "key is not PEM",
			folder: func(t *testing.T) (string, string) {
				dir := copyGatewayDir(t, tlsutil.ServerKeyFile)
				key := filepath.Join(dir, tlsutil.ServerKeyFile)
				ssetest.WriteFile(t, key, []byte("-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n"))
				return dir, key
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, badFile := tt.folder(t)
			address := ssetest.FreeAddress(t)
			text := fmt.Sprintf(`
listeners:
  - address: %q
    engine: Py
    tls:
      dir: %q
engines:
  Py:
    backends:
      - address: %q
`, address, dir, plugin.Addr)

			run := serveUntilExit(t, text, address)

			if run.exitCode == 0 {
				t.Errorf("ssegw serve exit status = 0, want non-zero; stderr:\n%s", run.stderr)
			}
			if run.elapsed > 2*time.Second {
				t.Errorf("ssegw serve exited after %v, want within 2s", run.elapsed)
			}
			if !strings.Contains(run.stderr, badFile) {
				t.Errorf("ssegw serve stderr = %q, want it to name %s", run.stderr, badFile)
			}
			if !strings.Contains(run.stderr, "listeners[0].tls") {
				t.Errorf("ssegw serve stderr = %q, want it to name the key listeners[0].tls", run.stderr)
			}
			if run.accepted {
				t.Errorf("a connection to %s was accepted while ssegw ran, want none", address)
			}
			checkRefused(t, address)
		})
	}
}

// TestServeNamesBusyPorts checks that serve, when other processes hold
// the ports of two listeners and of the admin listener, names each with
// its key and says what to do, exits with a non-zero status, and leaves
// the listener it could bind closed.
func TestServeNamesBusyPorts(t *testing.T) {
	plugin := startServePlugin(t, "plugin-py")
	var busy []string
	for range 2 {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { lis.Close() })
		busy = append(busy, lis.Addr().String())
	}
	free := ssetest.FreeAddress(t)
	admin, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	text := fmt.Sprintf(`
admin: {address: %q}
listeners:
  - {address: %q, engine: Py, insecure: true}
  - {address: %q, engine: Py, insecure: true}
  - {address: %q, engine: Py, insecure: true}
engines:
  Py:
    backends:
      - address: %q
`, admin.Addr().String(), free, busy[0], busy[1], plugin.Addr)

	run := serveUntilExit(t, text, free)
	if run.exitCode == 0 {
		t.Errorf("ssegw serve exit status = 0, want non-zero; stderr:\n%s", run.stderr)
	}
	for i, address := range busy {
		want := fmt.Sprintf("listeners[%d].address: cannot listen on %s: the port is in use; stop the process that holds it", i+1, address)
		if !strings.Contains(run.stderr, want) {
			t.Errorf("ssegw serve stderr = %q, want it to contain %q", run.stderr, want)
		}
	}
	if want := "admin.address: cannot listen on " + admin.Addr().String() + ": the port is in use"; !strings.Contains(run.stderr, want) {
		t.Errorf("ssegw serve stderr = %q, want it to contain %q", run.stderr, want)
	}
	checkRefused(t, free)
}

// TestServeRejectsInvalidConfig checks that serve prints each problem of a
// configuration on its own line, starting with the key at fault, exits
// with status 2 and never listens, also for two engines that nothing
// tells apart (C07).
func TestServeRejectsInvalidConfig(t *testing.T) {
	plugin := startServePlugin(t, "plugin-r")

	tests := []struct {
		name string
		// config returns the file's content for a listener address.
		config func(address string) string
		// wantLines are the keys that must each start a line of stderr.
		wantLines []string
		// env is added to the environment of serve.
		env []string
	}{
		{
			name: "several problems",
			config: func(address string) string {
				return fmt.Sprintf(`
listeners:
  - address: %q
    engine: Julia
engines:
  R:
    request_timeout: -1s
    backends: []
log:
  level: loud
`, address)
			},
			wantLines: []string{
				"listeners[0]: ",
				"listeners[0].engine: ",
				"engines.R.request_timeout: ",
				"engines.R.backends: ",
				"log.level: ",
			},
		},
		{
			name: "two listeners on one address",
			config: func(address string) string {
				return fmt.Sprintf(`
listeners:
  - {address: %q, engine: R, insecure: true}
  - {address: %q, engine: Py, insecure: true}
engines:
  R: {backends: [{address: %q}]}
  Py: {backends: [{address: %q}]}
`, address, address, plugin.Addr, plugin.Addr)
			},
			wantLines: []string{"listeners[1].address: "},
		},
		{
			name: "two engines claim one host",
			config: func(address string) string {
				return fmt.Sprintf(`
listeners:
  - {address: %q, insecure: true}
engines:
  R: {hosts: [shared.gw.test], backends: [{address: %q}]}
  Py: {hosts: [shared.gw.test], backends: [{address: %q}]}
`, address, plugin.Addr, plugin.Addr)
			},
			wantLines: []string{"engines.R.hosts[0]: "},
		},
		{
			name: "OpenTelemetry variables",
			config: func(address string) string {
				return fmt.Sprintf(`
listeners:
  - {address: %q, engine: R, insecure: true}
engines:
  R: {backends: [{address: %q}]}
`, address, plugin.Addr)
			},
			env: []string{"OTEL_TRACES_EXPORTER=console", "OTEL_BSP_MAX_QUEUE_SIZE=-1", "OTEL_METRICS_EXPORTER=prom"},
			wantLines: []string{
				`telemetry.traces: environment variable OTEL_BSP_MAX_QUEUE_SIZE="-1" is invalid`,
				`telemetry.metrics: environment variable OTEL_METRICS_EXPORTER="prom" is invalid`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			address := ssetest.FreeAddress(t)
			run := serveUntilExit(t, tt.config(address), address, tt.env...)

			if run.exitCode != 2 {
				t.Errorf("ssegw serve exit status = %d, want 2; stderr:\n%s", run.exitCode, run.stderr)
			}
			lines := strings.Split(run.stderr, "\n")
			for _, key := range tt.wantLines {
				found := slices.ContainsFunc(lines, func(line string) bool { return strings.HasPrefix(line, key) })
				if !found {
					t.Errorf("ssegw serve stderr has no line starting with %q; stderr:\n%s", key, run.stderr)
				}
			}
			if run.accepted {
				t.Errorf("a connection to %s was accepted while ssegw ran, want none", address)
			}
			checkRefused(t, address)
		})
	}
}

// logRecords returns the JSON log records in text whose message is msg.
func logRecords(text, msg string) []map[string]any {
	var records []map[string]any
	for line := range strings.SplitSeq(text, "\n") {
		var record map[string]any
		if json.Unmarshal([]byte(line), &record) != nil {
			continue
		}
		if record["msg"] == msg {
			records = append(records, record)
		}
	}
	return records
}

// waitForRecords waits until p has logged n records with message msg to
// stderr, and returns them. It fails the test when p exits or timeout
// passes first.
func waitForRecords(t *testing.T, p *ssetest.Process, msg string, n int, timeout time.Duration) []map[string]any {
	t.Helper()
	var records []map[string]any
	p.WaitForStderr(t, fmt.Sprintf("with %q log record number %d", msg, n), timeout, func(line string) bool {
		var record map[string]any
		if json.Unmarshal([]byte(line), &record) == nil && record["msg"] == msg {
			records = append(records, record)
		}
		return len(records) == n
	})
	return records
}

// TestServeRunsUntilSIGTERM checks that serve with a valid configuration
// logs one "listening" record per listener, forwards a call, exits 0
// within 5s of SIGTERM, and that SSEGW_LOG_LEVEL overrides the file's
// log level. The file turns the access log off, so that a call is logged
// at debug level only.
func TestServeRunsUntilSIGTERM(t *testing.T) {
	plugin := startServePlugin(t, "plugin-r")
	binary := ssetest.Binary(t, "./cmd/ssegw")

	tests := []struct {
		name string
		env  []string
		// wantCallRecord is whether the call is logged, which happens at
		// debug level only without the access log.
		wantCallRecord bool
		// gogc is GOGC in the gateway's environment: with it, the
		// gateway leaves garbage collection to Go's own pacing.
		gogc string
	}{
		{name: "level info from the file", gogc: os.Getenv("GOGC")},
		{name: "SSEGW_LOG_LEVEL=debug", env: []string{"SSEGW_LOG_LEVEL=debug", "GOGC=150", "GOMEMLIMIT=64MiB"}, wantCallRecord: true, gogc: "150"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addresses := []string{ssetest.FreeAddress(t), ssetest.FreeAddress(t)}
			configFile := writeConfig(t, fmt.Sprintf(`
listeners:
  - {address: %q, engine: R, insecure: true}
  - {address: %q, engine: R, insecure: true}
engines:
  R: {backends: [{address: %q}]}
log:
  level: info
  format: json
  access_log: false
`, addresses[0], addresses[1], plugin.Addr))

			p := ssetest.StartProcess(t, binary, tt.env, "serve", "--config", configFile)
			waitForRecords(t, p, "listening", len(addresses), 10*time.Second)

			// Call through the first listener.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			caps, err := ssetest.Dial(t, addresses[0]).GetCapabilities(ctx, &ssepb.Empty{})
			if err != nil {
				t.Fatalf("GetCapabilities() error = %v, want nil", err)
			}
			if got := caps.GetPluginIdentifier(); got != "plugin-r" {
				t.Errorf("GetCapabilities().PluginIdentifier = %q, want %q", got, "plugin-r")
			}

			// Stop; the whole log is in stderr once the process has exited.
			if err := p.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			signalled := time.Now()
			waitErr := p.Wait(t, 10*time.Second)
			if elapsed := time.Since(signalled); elapsed > 5*time.Second {
				t.Errorf("ssegw serve exited %v after SIGTERM, want within 5s", elapsed)
			}
			if code := exitCode(t, waitErr); code != 0 {
				t.Errorf("ssegw serve exit status after SIGTERM = %d, want 0; stderr:\n%s", code, p.Stderr())
			}
			stderr := p.Stderr()

			var listening []string
			for _, record := range logRecords(stderr, "listening") {
				listening = append(listening, fmt.Sprint(record["address"]))
			}
			slices.Sort(listening)
			if want := slices.Sorted(slices.Values(addresses)); !slices.Equal(listening, want) {
				t.Errorf("listening records' addresses = %q, want %q", listening, want)
			}
			if got := len(logRecords(stderr, "stopped")); got != 1 {
				t.Errorf("got %d %q log records, want 1", got, "stopped")
			}
			wantGC := map[string]any{"heap_floor": "32MiB"}
			if tt.gogc != "" {
				wantGC = map[string]any{"gogc": tt.gogc, "memory_limit": "64MiB"}
			}
			if gc := logRecords(stderr, "garbage collection"); len(gc) != 1 {
				t.Errorf("got %d %q log records, want 1", len(gc), "garbage collection")
			} else {
				for key, want := range wantGC {
					if gc[0][key] != want {
						t.Errorf("garbage collection record's %s = %v, want %v; record: %v", key, gc[0][key], want, gc[0])
					}
				}
			}

			calls := logRecords(stderr, "call")
			if !tt.wantCallRecord {
				if len(calls) != 0 {
					t.Errorf("got %d call log records at level info, want 0: %v", len(calls), calls)
				}
				return
			}
			if len(calls) != 1 {
				t.Fatalf("got %d call log records, want 1; stderr:\n%s", len(calls), stderr)
			}
			for key, want := range map[string]string{
				"level":  "DEBUG",
				"engine": "R",
				"method": "/qlik.sse.Connector/GetCapabilities",
				"code":   "OK",
			} {
				if got := calls[0][key]; got != want {
					t.Errorf("call log record %s = %v, want %s", key, got, want)
				}
			}
		})
	}
}

// TestServeConfigArguments checks what serve says without a config.yaml in
// the working directory and with the file given as an argument instead of
// --config: it once reported only "stat config.yaml: no such file or
// directory", where validate named the folder and the flag.
func TestServeConfigArguments(t *testing.T) {
	t.Chdir(t.TempDir())
	output, err := runCommand(t, "serve")
	var exit exitError
	if !errors.As(err, &exit) || exit.code != 2 {
		t.Errorf("serve without config.yaml = %v, want exit status 2; output:\n%s", err, output)
	}
	if want := "config.yaml there is the default configuration file, and --config FILE names another"; !strings.Contains(output, want) {
		t.Errorf("serve without config.yaml output = %q, want it to contain %q", output, want)
	}

	_, err = runCommand(t, "serve", "gateway.yaml")
	if want := "serve takes the configuration file with --config, as in ssegw serve --config gateway.yaml"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("serve gateway.yaml = %v, want an error containing %q", err, want)
	}
}
