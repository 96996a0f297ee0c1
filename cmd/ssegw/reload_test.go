package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/ssepb"
)

// callResult is the end of one call.
type callResult struct {
	replica string
	err     error
}

// callReplica makes one ExecuteFunction call with one empty bundle, held
// by the plugin when hold is set, and returns the replica that served it.
// It does not stop the test, so that goroutines may call it.
func callReplica(t *testing.T, client ssepb.ConnectorClient, hold bool) callResult {
	t.Helper()
	md, err := ssepb.FunctionCallMetadata(0, &ssepb.CommonRequestHeader{AppId: "app", UserId: "user"})
	if err != nil {
		return callResult{err: err}
	}
	if hold {
		md.Set(ssetest.HoldHeader, "1")
	}
	ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(context.Background(), md), 30*time.Second)
	defer cancel()

	// Send, half-close, and read to the end.
	stream, err := client.ExecuteFunction(ctx)
	if err != nil {
		return callResult{err: err}
	}
	if err := stream.Send(&ssepb.BundledRows{}); err != nil && !errors.Is(err, io.EOF) {
		return callResult{err: err}
	}
	if err := stream.CloseSend(); err != nil {
		return callResult{err: err}
	}
	for {
		if _, err = stream.Recv(); err != nil {
			break
		}
	}

	result := callResult{}
	if !errors.Is(err, io.EOF) {
		result.err = err
	}
	if header, headerErr := stream.Header(); headerErr == nil && len(header.Get(ssetest.ReplicaHeader)) > 0 {
		result.replica = header.Get(ssetest.ReplicaHeader)[0]
	}
	return result
}

// reloadConfigText returns a configuration file for one plaintext
// listener at address, for engine R served by backend.
func reloadConfigText(address, backend string) string {
	return fmt.Sprintf(`
listeners:
  - {address: %q, engine: R, insecure: true}
engines:
  R: {backends: [{address: %q}]}
log: {level: info, format: json}
admin: {address: "127.0.0.1:0"}
`, address, backend)
}

// checkServedBy makes n calls and checks that replica served each.
func checkServedBy(t *testing.T, client ssepb.ConnectorClient, when, replica string, n int) {
	t.Helper()
	for i := range n {
		result := callReplica(t, client, false)
		if result.err != nil {
			t.Errorf("call %d %s = %v, want OK", i, when, result.err)
		}
		if result.replica != replica {
			t.Errorf("call %d %s served by %q, want %q", i, when, result.replica, replica)
		}
	}
}

// TestServeReloads checks the reloads of a running `ssegw serve`, on one
// client connection that must stay ready throughout. SIGHUP with a new
// backend makes new calls use it while 5 calls held on the old backend
// finish OK. SIGHUP with a broken file keeps the running configuration and
// logs the error. A change to the file is picked up without a signal. The
// configuration path is a link to a file in another folder, whose changes
// the gateway's watch of the link's folder does not see, so that only
// SIGHUP can pick them up.
func TestServeReloads(t *testing.T) {
	t.Parallel() // about 3s: a process, and the file watch's settling time
	first, second, third := ssetest.StartHoldingPlugin(t, "first", false), ssetest.StartHoldingPlugin(t, "second", false), ssetest.StartHoldingPlugin(t, "third", false)
	address := ssetest.FreeAddress(t)
	target := filepath.Join(t.TempDir(), "real.yaml")
	ssetest.WriteFile(t, target, []byte(reloadConfigText(address, first.Addr)))
	configFile := filepath.Join(t.TempDir(), "ssegw.yaml")
	if err := os.Symlink(target, configFile); err != nil {
		t.Fatal(err)
	}
	p := ssetest.StartProcess(t, ssetest.Binary(t, "./cmd/ssegw"), nil, "serve", "--config", configFile)
	waitForRecords(t, p, "listening", 1, 10*time.Second)
	conn, client := ssetest.DialConn(t, address)
	checkServedBy(t, client, "at start", first.Name, 1)
	stopRecording := ssetest.RecordStates(conn)

	// SIGHUP with a new backend while calls are held on the old one.
	const held = 5
	results := make(chan callResult, held)
	for range held {
		go func() { results <- callReplica(t, client, true) }()
	}
	first.WaitHeld(t, held)
	ssetest.WriteFile(t, target, []byte(reloadConfigText(address, second.Addr)))
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitForRecords(t, p, "configuration reloaded", 1, 10*time.Second)
	checkServedBy(t, client, "after SIGHUP", second.Name, 3)
	first.Release()
	for range held {
		select {
		case result := <-results:
			if result.err != nil {
				t.Errorf("call held across SIGHUP = %v, want OK", result.err)
			}
			if result.replica != first.Name {
				t.Errorf("call held across SIGHUP served by %q, want %q", result.replica, first.Name)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a call held across SIGHUP did not end within 10s of its release")
		}
	}

	// SIGHUP with a broken file: the running configuration stays.
	ssetest.WriteFile(t, target, []byte("engines: [not, a, map\n"))
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	rejected := waitForRecords(t, p, "configuration not reloaded; the running one stays", 1, 10*time.Second)
	if got := rejected[0]["level"]; got != "ERROR" {
		t.Errorf("rejected reload record level = %v, want ERROR", got)
	}
	if got, _ := rejected[0]["error"].(string); got == "" || strings.Contains(got, "\n") {
		t.Errorf("rejected reload record error = %q, want the problem on one line", got)
	}
	checkServedBy(t, client, "after SIGHUP with a broken file", second.Name, 3)

	// A new file at the configuration path, without a signal.
	replacement := filepath.Join(filepath.Dir(configFile), "new.yaml")
	ssetest.WriteFile(t, replacement, []byte(reloadConfigText(address, third.Addr)))
	if err := os.Rename(replacement, configFile); err != nil {
		t.Fatal(err)
	}
	waitForRecords(t, p, "configuration reloaded", 2, 10*time.Second)
	checkServedBy(t, client, "after the file changed", third.Name, 3)

	states := stopRecording()
	if !slices.Equal(states, []connectivity.State{connectivity.Ready}) {
		t.Errorf("client connection states during the reloads = %v, want only READY", states)
	}
	if got := len(logRecords(p.Stderr(), "configuration reloaded")); got != 2 {
		t.Errorf("got %d configuration reloaded records, want 2: one per good SIGHUP and file change", got)
	}
}

// servedHoldingPlugin is an `ssegw serve` process whose one engine routes
// to a holding plugin, with a client connected to it.
type servedHoldingPlugin struct {
	plugin     *ssetest.HoldingPlugin
	address    string // the gateway's listener
	configFile string
	process    *ssetest.Process
	client     ssepb.ConnectorClient
}

// startServeWithHoldingPlugin starts a holding plugin named "only" and
// `ssegw serve` with a configuration file that routes to it. It returns
// once the gateway listens and a client has dialled it.
func startServeWithHoldingPlugin(t *testing.T) *servedHoldingPlugin {
	t.Helper()
	s := &servedHoldingPlugin{plugin: ssetest.StartHoldingPlugin(t, "only", false), address: ssetest.FreeAddress(t)}
	s.configFile = writeConfig(t, reloadConfigText(s.address, s.plugin.Addr))
	s.process = ssetest.StartProcess(t, ssetest.Binary(t, "./cmd/ssegw"), nil, "serve", "--config", s.configFile)
	waitForRecords(t, s.process, "listening", 1, 10*time.Second)
	_, s.client = ssetest.DialConn(t, s.address)
	return s
}

// TestServeDrainsOnSIGTERM checks that SIGTERM during load lets the 5 calls
// in flight finish OK, refuses new connections meanwhile, and that the
// process exits 0 once those calls have ended. A SIGHUP during the drain,
// as from a certificate renewal hook, must be logged and ignored instead of
// ending the process, as Go's default action for SIGHUP would.
func TestServeDrainsOnSIGTERM(t *testing.T) {
	t.Parallel()
	s := startServeWithHoldingPlugin(t)
	checkServedBy(t, s.client, "before SIGTERM", s.plugin.Name, 1)

	const held = 5
	results := make(chan callResult, held)
	for range held {
		go func() { results <- callReplica(t, s.client, true) }()
	}
	s.plugin.WaitHeld(t, held)
	if err := s.process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitForRecords(t, s.process, "stopping; waiting for calls in flight, a second signal ends them", 1, 10*time.Second)
	if err := s.process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitForRecords(t, s.process, "SIGHUP ignored: the gateway is stopping; no reload", 1, 10*time.Second)

	// New connections are refused while the calls drain. The dials repeat
	// because the gateway closes its listeners after the "stopping" record
	// without logging it, so no event marks the moment.
	deadline := time.Now().Add(5 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", s.address, time.Second)
		if err != nil {
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("Dial(%s) while draining: %v, want connection refused", s.address, err)
			}
			break
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatalf("Dial(%s) still accepted 5s after SIGTERM, want connection refused", s.address)
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, freshClient := ssetest.DialConn(t, s.address)
	if result := callReplica(t, freshClient, false); status.Code(result.err) != codes.Unavailable {
		t.Errorf("new call while draining = %v, want Unavailable", result.err)
	}

	// The held calls finish, then the process exits.
	s.plugin.Release()
	released := time.Now()
	for range held {
		select {
		case result := <-results:
			if result.err != nil {
				t.Errorf("call in flight at SIGTERM = %v, want OK", result.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a call in flight at SIGTERM did not end within 10s of its release")
		}
	}
	if code := exitCode(t, s.process.Wait(t, 10*time.Second)); code != 0 {
		t.Errorf("ssegw serve exit status after SIGTERM = %d, want 0; stderr:\n%s", code, s.process.Stderr())
	}
	if elapsed := time.Since(released); elapsed > 5*time.Second {
		t.Errorf("ssegw serve exited %v after its last calls were released, want within 5s", elapsed)
	}
	if ended := logRecords(s.process.Stderr(), "the calls still in flight were ended"); len(ended) != 0 {
		t.Errorf("records of ended calls after a full drain: %v, want none", ended)
	}
}

// TestServeSecondSignalEndsCalls checks that a second SIGTERM ends the
// calls in flight at once, with Unavailable and the reason, which the
// client gets and the access log records as a warning: the gateway ended
// them, not the client.
func TestServeSecondSignalEndsCalls(t *testing.T) {
	t.Parallel()
	s := startServeWithHoldingPlugin(t)
	defer s.plugin.Release()

	const held = 2
	results := make(chan callResult, held)
	for range held {
		go func() { results <- callReplica(t, s.client, true) }()
	}
	s.plugin.WaitHeld(t, held)
	for signal := range 2 {
		if err := s.process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if signal == 0 {
			waitForRecords(t, s.process, "stopping; waiting for calls in flight, a second signal ends them", 1, 10*time.Second)
		}
	}
	if code := exitCode(t, s.process.Wait(t, 10*time.Second)); code != 0 {
		t.Errorf("ssegw serve exit status after two SIGTERMs = %d, want 0; stderr:\n%s", code, s.process.Stderr())
	}
	const reason = "the gateway stopped before the call ended: a second stop signal came"
	for range held {
		result := <-results
		if st := status.Convert(result.err); st.Code() != codes.Unavailable || st.Message() != reason {
			t.Errorf("call in flight at the second SIGTERM: %v, want Unavailable %q", result.err, reason)
		}
	}

	calls := logRecords(s.process.Stderr(), "call")
	if len(calls) != held {
		t.Fatalf("got %d call records, want %d; stderr:\n%s", len(calls), held, s.process.Stderr())
	}
	for _, record := range calls {
		if record["code"] != "Unavailable" || record["error"] != reason || record["level"] != "WARN" {
			t.Errorf("call record: level %v, code %v, error %q; want WARN, Unavailable, %q", record["level"], record["code"], record["error"], reason)
		}
	}
	if ended := logRecords(s.process.Stderr(), "the calls still in flight were ended"); len(ended) != 1 || ended[0]["reason"] != "a second stop signal came" {
		t.Errorf("records of the ended calls: %v, want one with reason %q", ended, "a second stop signal came")
	}
}

// TestServeReloadRejectsOversizedFile checks that a reload rejects a
// configuration file over config.MaxFileSize, logs why, and keeps serving
// with the running configuration.
func TestServeReloadRejectsOversizedFile(t *testing.T) {
	t.Parallel()
	s := startServeWithHoldingPlugin(t)
	checkServedBy(t, s.client, "at start", s.plugin.Name, 1)

	// A sparse file, so that the test writes little.
	if err := os.Truncate(s.configFile, config.MaxFileSize+1); err != nil {
		t.Fatal(err)
	}
	if err := s.process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	rejected := waitForRecords(t, s.process, "configuration not reloaded; the running one stays", 1, 10*time.Second)
	if got, _ := rejected[0]["error"].(string); !strings.Contains(got, "more than the 4MiB that a configuration file may have") {
		t.Errorf("rejected reload record error = %q, want the size bound", got)
	}
	checkServedBy(t, s.client, "after SIGHUP with an oversized file", s.plugin.Name, 3)
}
