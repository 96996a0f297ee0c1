package e2e

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ssegw/ssegw/examples/plugin/example"
	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/ssepb"
)

// startResilienceGateway runs `ssegw serve` with one plaintext listener for
// engine R, whose backends are the plugins and whose further keys are
// engine.
func startResilienceGateway(t *testing.T, engine map[string]any, plugins ...*ssetest.RestartablePlugin) *gatewayProcess {
	t.Helper()
	var backends []map[string]any
	for _, plugin := range plugins {
		backends = append(backends, map[string]any{"address": plugin.Address})
	}
	engine["backends"] = backends
	return startGatewayProcess(t, map[string]any{
		"listeners": []map[string]any{{"address": "127.0.0.1:0", "engine": "R", "insecure": true}},
		"engines":   map[string]any{"R": engine},
	})
}

// echoContext returns ctx carrying the headers of a call of the example
// plugin's Echo.
func echoContext(t *testing.T, ctx context.Context) context.Context {
	t.Helper()
	md, err := ssepb.FunctionCallMetadata(example.FunctionEcho, &ssepb.CommonRequestHeader{AppId: "app", UserId: "user", Cardinality: 1})
	if err != nil {
		t.Fatal(err)
	}
	return metadata.NewOutgoingContext(ctx, md)
}

// echo makes one Echo call with one bundle and returns the replica that
// answered, from the x-example-plugin header, and the call's error.
func echo(t *testing.T, ctx context.Context, client ssepb.ConnectorClient) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(echoContext(t, ctx), 30*time.Second)
	defer cancel()
	stream, err := client.ExecuteFunction(ctx)
	if err != nil {
		return "", err
	}
	if err := stream.Send(ssetest.StringBundle("ping")); err != nil {
		return "", err
	}
	if err := stream.CloseSend(); err != nil {
		return "", err
	}
	for {
		if _, err = stream.Recv(); err != nil {
			break
		}
	}
	replica := ""
	if header, headerErr := stream.Header(); headerErr == nil && len(header.Get(example.InstanceHeader)) > 0 {
		replica = header.Get(example.InstanceHeader)[0]
	}
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return replica, err
}

// gatewayRecords returns the records with message msg in the gateway
// process's JSON log so far.
func gatewayRecords(p *ssetest.Process, msg string) []map[string]any {
	var records []map[string]any
	scanner := bufio.NewScanner(strings.NewReader(p.Stderr()))
	scanner.Buffer(nil, 1<<20)
	for scanner.Scan() {
		var record map[string]any
		if json.Unmarshal(scanner.Bytes(), &record) == nil && record["msg"] == msg {
			records = append(records, record)
		}
	}
	return records
}

// TestPluginKilledMidStream SIGKILLs a replica after it has streamed 2 of
// 10 bundles of an Echo call. The client gets the 2 bundles and then
// Unavailable within 1s, never OK with part of the data, and the call is
// not replayed. The next 10 calls go to the other replica and succeed. The
// killed replica is back in rotation within 5s of its restart. The
// client's connection to the gateway stays ready the whole time, without
// GOAWAY (C10).
func TestPluginKilledMidStream(t *testing.T) {
	t.Parallel() // about 5s: plugin processes and the restarted one's return
	plugins := map[string]*ssetest.RestartablePlugin{}
	for _, name := range []string{"tp-1", "tp-2"} {
		plugins[name] = ssetest.StartRestartablePlugin(t, name)
	}
	gw := startResilienceGateway(t, map[string]any{"probe_interval": "1s"}, plugins["tp-1"], plugins["tp-2"])
	conn, client := ssetest.DialConn(t, gw.Addrs[0])
	ctx := testContext(t, time.Minute)

	// Both replicas serve before the fault.
	seen := map[string]bool{}
	deadline := time.Now().Add(15 * time.Second)
	for len(seen) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("replicas that answered within 15s = %v, want both", seen)
		}
		replica, err := echo(t, ctx, client)
		if err != nil {
			t.Fatalf("Echo call before the fault = %v, want OK", err)
		}
		seen[replica] = true
	}
	stopWatching := ssetest.RecordStates(conn)

	// Stream 2 of 10 bundles, each echoed before the next is sent.
	stream, err := client.ExecuteFunction(echoContext(t, ctx))
	if err != nil {
		t.Fatalf("ExecuteFunction() = %v, want a stream", err)
	}
	var received int
	for i := range 2 {
		if err := stream.Send(ssetest.StringBundle(fmt.Sprintf("bundle %d", i+1))); err != nil {
			t.Fatalf("sending bundle %d: %v", i+1, err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatalf("reply to bundle %d = %v, want a bundle", i+1, err)
		}
		received++
	}
	header, err := stream.Header()
	if err != nil || len(header.Get(example.InstanceHeader)) != 1 {
		t.Fatalf("response header = %v (%v), want the replica's name", header, err)
	}
	killed := plugins[header.Get(example.InstanceHeader)[0]]
	var other *ssetest.RestartablePlugin
	for _, plugin := range plugins {
		if plugin != killed {
			other = plugin
		}
	}

	// Kill the replica; the client tries to send the rest and reads on.
	killed.Kill(t)
	killedAt := time.Now()
	for i := 2; i < 10; i++ {
		if stream.Send(ssetest.StringBundle(fmt.Sprintf("bundle %d", i+1))) != nil {
			break // the status comes from Recv
		}
	}
	stream.CloseSend()
	for {
		if _, err = stream.Recv(); err != nil {
			break
		}
		received++
	}
	failedAfter := time.Since(killedAt)
	if code := status.Code(err); code != codes.Unavailable {
		t.Errorf("call whose replica was killed ended with %v, want Unavailable", err)
	}
	if failedAfter > time.Second {
		t.Errorf("call whose replica was killed ended %v after the kill, want within 1s", failedAfter)
	}
	if received != 2 {
		t.Errorf("call whose replica was killed got %d bundles, want 2", received)
	}

	// The next 10 calls go to the other replica.
	for i := range 10 {
		replica, err := echo(t, ctx, client)
		if err != nil {
			t.Errorf("call %d after the kill = %v, want OK", i, err)
		}
		if replica != other.Name {
			t.Errorf("call %d after the kill answered by %q, want %q", i, replica, other.Name)
		}
	}

	// The killed replica is back in rotation soon after its restart.
	killed.Restart(t)
	restarted := time.Now()
	for {
		replica, err := echo(t, ctx, client)
		if err != nil {
			t.Errorf("call after the restart = %v, want OK", err)
		}
		if replica == killed.Name {
			t.Logf("the restarted replica served a call %v after it listened again", time.Since(restarted))
			break
		}
		if time.Since(restarted) > 5*time.Second {
			t.Errorf("the restarted replica served no call within 5s of listening again")
			break
		}
	}

	states := stopWatching()
	if !slices.Equal(states, []connectivity.State{connectivity.Ready}) {
		t.Errorf("client connection states during the test = %v, want only READY", states)
	}

	// The gateway's record of the broken call: one attempt, no replay.
	var failed []map[string]any
	for _, record := range gatewayRecords(gw.Process, "call") {
		if record["code"] != "OK" {
			failed = append(failed, record)
		}
	}
	if len(failed) != 1 {
		t.Fatalf("gateway logged %d failed calls, want 1: %v", len(failed), failed)
	}
	if got := failed[0]["attempts"]; got != float64(1) {
		t.Errorf("failed call record attempts = %v, want 1", got)
	}
	if got := failed[0]["backend"]; got != killed.Address {
		t.Errorf("failed call record backend = %v, want the killed replica %s", got, killed.Address)
	}
	if got := failed[0]["rows_out"]; got != float64(2) {
		t.Errorf("failed call record rows_out = %v, want 2", got)
	}
}

// processFDs returns the number of open file descriptors of process pid.
func processFDs(t *testing.T, pid int) int {
	t.Helper()
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("listing descriptors of process %d: %v", pid, err)
	}
	return len(entries)
}

// establishedConnections counts the established TCP connections that
// process pid has open to address (127.0.0.1:port), by matching the
// socket inodes among its descriptors with the kernel's TCP tables.
// Sockets in TIME_WAIT or CLOSE_WAIT, which are no longer connections,
// are not counted. It returns an error instead of failing the test, so
// that a goroutine other than the test's may call it.
func establishedConnections(pid int, address string) (int, error) {
	host, portText, err := net.SplitHostPort(address)
	if err != nil {
		return 0, err
	}
	ip := net.ParseIP(host)
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("address %s: %w", address, err)
	}

	// The process's sockets, by inode.
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(fdDir)
	if err != nil {
		return 0, fmt.Errorf("listing descriptors of process %d: %w", pid, err)
	}
	sockets := map[string]bool{}
	for _, entry := range entries {
		target, err := os.Readlink(filepath.Join(fdDir, entry.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		if inode, ok := strings.CutPrefix(target, "socket:["); ok {
			sockets[strings.TrimSuffix(inode, "]")] = true
		}
	}

	// Lines of /proc/PID/net/tcp: sl local rem st ... with the inode tenth.
	count := 0
	for _, table := range []string{"tcp", "tcp6"} {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			return 0, fmt.Errorf("reading the TCP table: %w", err)
		}
		for line := range strings.SplitSeq(string(data), "\n") {
			fields := strings.Fields(line)
			if len(fields) < 10 || fields[0] == "sl" {
				continue
			}
			const established = "01"
			if fields[3] != established || !sockets[fields[9]] {
				continue
			}
			remoteIP, remotePort, ok := parseProcAddress(fields[2])
			if ok && remoteIP.Equal(ip) && remotePort == port {
				count++
			}
		}
	}
	return count, nil
}

// watchConnections counts the gateway's established connections to
// address every connectionSampling until the returned function is first
// called. That function returns the highest count seen. The test fails
// when the count stays above maxConnections for maxExcessDuration. A
// shorter excess, such as a replaced connection closing after a plugin
// restart, is logged with the gateway's records other than calls.
//
// The kernel sends no event when a connection opens or closes, so this
// samples /proc. Samples further apart than maxSampleGap, as on a loaded
// machine, start the measured excess again instead of counting the gap
// as excess.
func watchConnections(t *testing.T, gw *gatewayProcess, address string, maxConnections int) (stop func() int) {
	const (
		connectionSampling = 20 * time.Millisecond
		maxExcessDuration  = 2 * time.Second
		maxSampleGap       = 250 * time.Millisecond
		loggedExcesses     = 3
	)
	pid := gw.Cmd.Process.Pid
	done, finished := make(chan struct{}), make(chan struct{})
	peak := 0
	go func() {
		defer close(finished)
		ticker := time.NewTicker(connectionSampling)
		defer ticker.Stop()
		var excessSince, lastSample time.Time // excessSince is zero while at most maxConnections
		excessPeak, excesses, failed := 0, 0, false
		for {
			n, err := establishedConnections(pid, address)
			if err != nil {
				t.Errorf("counting the gateway's connections to the plugin: %v", err)
				return
			}
			now := time.Now()
			peak = max(peak, n)
			if n > maxConnections && (excessSince.IsZero() || now.Sub(lastSample) > maxSampleGap) {
				excessSince, excessPeak = now, n
			}
			switch {
			case n > maxConnections:
				excessPeak = max(excessPeak, n)
				if !failed && now.Sub(excessSince) >= maxExcessDuration {
					failed = true
					t.Errorf("gateway held more than %d connections to the plugin (up to %d) for %v; its records other than calls:\n%s",
						maxConnections, excessPeak, maxExcessDuration, nonCallRecords(gw.Stderr(), 40))
				}
			case !excessSince.IsZero():
				excesses++
				if excesses <= loggedExcesses {
					t.Logf("gateway held %d connections to the plugin for %v; its records other than calls:\n%s",
						excessPeak, now.Sub(excessSince).Round(time.Millisecond), nonCallRecords(gw.Stderr(), 40))
				}
				excessSince = time.Time{}
			}
			lastSample = now

			select {
			case <-done:
				if excesses > loggedExcesses {
					t.Logf("%d more moments with more than %d connections to the plugin, each under %v", excesses-loggedExcesses, maxConnections, maxExcessDuration)
				}
				return
			case <-ticker.C:
			}
		}
	}()
	return sync.OnceValue(func() int {
		close(done)
		<-finished
		return peak
	})
}

// parseProcAddress decodes an address of /proc/net/tcp or tcp6, such as
// 0100007F:1F90: the IP address as 32-bit words in host byte order (little
// endian on the machines these tests run on) and the port in hex.
func parseProcAddress(text string) (net.IP, uint64, bool) {
	ipHex, portHex, ok := strings.Cut(text, ":")
	if !ok {
		return nil, 0, false
	}
	raw, err := hex.DecodeString(ipHex)
	if err != nil || len(raw)%4 != 0 {
		return nil, 0, false
	}
	for i := 0; i < len(raw); i += 4 {
		slices.Reverse(raw[i : i+4])
	}
	port, err := strconv.ParseUint(portHex, 16, 16)
	if err != nil {
		return nil, 0, false
	}
	return net.IP(raw), port, true
}

// goroutines returns the gateway process's go_goroutines metric.
func goroutines(t *testing.T, adminAddress string) int {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + adminAddress + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET /metrics: reading the body: %v", err)
	}
	for line := range strings.SplitSeq(string(body), "\n") {
		if value, ok := strings.CutPrefix(line, "go_goroutines "); ok {
			n, err := strconv.ParseFloat(value, 64)
			if err != nil {
				t.Fatalf("go_goroutines line %q: %v", line, err)
			}
			return int(n)
		}
	}
	t.Fatalf("/metrics has no go_goroutines line")
	return 0
}

// usage is a gateway process's resource use at one moment.
type usage struct {
	fds, goroutines int
}

// TestNoLeakAcrossRestarts runs, three times, 2,000 short sequential Echo
// calls and 200 calls that the client aborts mid-stream, while the plugin
// process is SIGKILLed and started again twice per run. After each run the
// gateway process's open descriptors and goroutines must return within +10
// of their baseline within 5s, and must not grow from run to run (+3
// allowed for timers and probes in progress). From the baseline on, the
// gateway holds at most 2 established connections to the plugin: one of
// the call pool and one of the health probes. Only for moments under 2s,
// while a replaced connection closes, may it hold more, and
// watchConnections samples the count every 20 ms to check that. Runs of
// this size fit the test time, and a leak of one descriptor or goroutine
// per call still shows in them.
func TestNoLeakAcrossRestarts(t *testing.T) {
	t.Parallel() // 15s to 40s under -race, with load: 6,600 calls and 6 plugin restarts
	const runs, shortCalls, abortEvery, maxConnections = 3, 2000, 10, 2
	plugin := ssetest.StartRestartablePlugin(t, "leak-check")
	gw := startResilienceGateway(t, map[string]any{}, plugin)
	pid := gw.Cmd.Process.Pid
	admin := gatewayRecords(gw.Process, "admin listening")
	if len(admin) != 1 {
		t.Fatalf("gateway logged %d admin listening records, want 1", len(admin))
	}
	adminAddress := fmt.Sprint(admin[0]["address"])
	_, client := ssetest.DialConn(t, gw.Addrs[0])
	ctx := testContext(t, 3*time.Minute)

	// measure returns the gateway's use now.
	measure := func() usage {
		return usage{fds: processFDs(t, pid), goroutines: goroutines(t, adminAddress)}
	}
	connections := func() int {
		n, err := establishedConnections(pid, plugin.Address)
		if err != nil {
			t.Fatalf("counting the gateway's connections to the plugin: %v", err)
		}
		return n
	}

	// The baseline: the probe's and the pool's connections are open.
	if _, err := echo(t, ctx, client); err != nil {
		t.Fatalf("first call = %v, want OK", err)
	}
	waitFor(t, 10*time.Second, "two connections to the plugin", func() bool {
		return connections() == maxConnections
	})
	baseline := measure()

	// NOTE: twice, in full-suite runs on a loaded machine, a third (once a
	// fourth) connection showed a few hundred calls after a plugin restart.
	// The likely cause, not confirmed, is the pool's old connection still
	// draining a call after the replica came back and the pool opened a new
	// one. watchConnections logs such moments with the gateway's state
	// changes.
	stopWatching := watchConnections(t, gw, plugin.Address, maxConnections)
	defer stopWatching() // when a check below ends the test early

	var settled []usage
	for run := range runs {
		for i := range shortCalls {
			if i == shortCalls/3 || i == 2*shortCalls/3 {
				plugin.Kill(t)
				plugin.Restart(t)
			}
			if _, err := echo(t, ctx, client); err != nil {
				t.Fatalf("run %d call %d = %v, want OK", run, i, err)
			}
			if i%abortEvery == 0 {
				abortMidStream(t, ctx, client)
			}
		}

		// Within 5s the gateway is back near its baseline.
		var now usage
		waitFor(t, 5*time.Second, fmt.Sprintf("run %d: descriptors and goroutines within +10 of %+v", run, baseline), func() bool {
			now = measure()
			return now.fds <= baseline.fds+10 && now.goroutines <= baseline.goroutines+10
		})
		settled = append(settled, now)
	}
	peakConnections := stopWatching()

	for run := 1; run < runs; run++ {
		if settled[run].fds > settled[0].fds+3 {
			t.Errorf("descriptors after run %d = %d, want at most %d (after run 0, +3)", run, settled[run].fds, settled[0].fds+3)
		}
		if settled[run].goroutines > settled[0].goroutines+3 {
			t.Errorf("goroutines after run %d = %d, want at most %d (after run 0, +3)", run, settled[run].goroutines, settled[0].goroutines+3)
		}
	}
	t.Logf("baseline %+v; after each run %+v; at most %d connections to the plugin", baseline, settled, peakConnections)
}

// abortMidStream starts an Echo call, reads the reply to its first bundle
// and cancels the call before it ends, as a client that goes away does.
func abortMidStream(t *testing.T, ctx context.Context, client ssepb.ConnectorClient) {
	t.Helper()
	ctx, cancel := context.WithCancel(echoContext(t, ctx))
	defer cancel()
	stream, err := client.ExecuteFunction(ctx)
	if err != nil {
		t.Fatalf("aborted call: ExecuteFunction() = %v, want a stream", err)
	}
	if err := stream.Send(ssetest.StringBundle("first of many")); err != nil {
		t.Fatalf("aborted call: sending = %v", err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("aborted call: reply to the first bundle = %v, want a bundle", err)
	}
	cancel()
	if _, err := stream.Recv(); status.Code(err) != codes.Canceled {
		t.Fatalf("aborted call: Recv() after cancel = %v, want Canceled", err)
	}
}

// nonCallRecords returns the last n lines of a gateway's JSON log that are
// not call records, which would hide its state changes.
func nonCallRecords(log string, n int) string {
	var lines []string
	for line := range strings.Lines(log) {
		if !strings.Contains(line, `"msg":"call"`) {
			lines = append(lines, line)
		}
	}
	return strings.Join(lines[max(0, len(lines)-n):], "")
}

// waitFor polls condition every 20 ms until it holds, or fails the test
// after timeout with what. It is for conditions that no event announces,
// such as counts of descriptors, connections or goroutines read from /proc
// or /metrics.
func waitFor(t *testing.T, timeout time.Duration, what string, condition func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !condition() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
