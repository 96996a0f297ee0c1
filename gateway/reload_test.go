package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/html"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/routing"
	"github.com/ssegw/ssegw/ssepb"
)

// reloadResult is the outcome of one call.
type reloadResult struct {
	replica string
	err     error
	ended   time.Time
}

// reloadCall makes an ExecuteFunction call, with the request header pairs
// kv added, and sends its outcome to results. It does not stop the test,
// so that goroutines may call it.
func reloadCall(ctx context.Context, client ssepb.ConnectorClient, results chan<- reloadResult, kv ...string) {
	md, err := ssepb.FunctionCallMetadata(0, &ssepb.CommonRequestHeader{AppId: "app", UserId: "user", Cardinality: 1})
	if err != nil {
		results <- reloadResult{err: err, ended: time.Now()}
		return
	}
	ctx = metadata.AppendToOutgoingContext(metadata.NewOutgoingContext(ctx, md), kv...)
	out := exchange(ctx, client, ssetest.Raw{})
	result := reloadResult{err: out.err, ended: time.Now()}
	if errors.Is(out.err, io.EOF) {
		result.err = nil
	}
	if names := out.header.Get(replicaHeader); len(names) > 0 {
		result.replica = names[0]
	}
	results <- result
}

// reloadConfig returns a configuration with one plaintext listener for
// engine R, whose backends are addresses, and a drain_timeout.
func reloadConfig(drain time.Duration, addresses ...string) *config.Config {
	cfg := &config.Config{
		Listeners:    []config.Listener{{Address: "127.0.0.1:0", Engine: "R", Insecure: true}},
		Engines:      map[string]*config.Engine{"R": ssetest.Engine(addresses...)},
		DrainTimeout: drain,
		Admin:        config.Admin{Address: "127.0.0.1:0"},
	}
	cfg.ApplyDefaults()
	return cfg
}

// reloadApply reloads gw with cfg and fails the test on an error or a
// warning.
func reloadApply(t *testing.T, gw *ssetest.Gateway, cfg *config.Config) {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test configuration: %v", err)
	}
	warnings, err := gw.Reload(cfg)
	if err != nil {
		t.Fatalf("Reload() = %v, want nil", err)
	}
	if len(warnings) > 0 {
		t.Errorf("Reload() warnings = %q, want none", warnings)
	}
}

// TestReloadSwitchesBackends reloads engine R with another backend while
// 5 calls are held on the old one. New calls go to the new backend at
// once, and the held calls finish OK on the old one. The client's
// connection stays ready throughout.
func TestReloadSwitchesBackends(t *testing.T) {
	t.Parallel()
	const held = 5
	old, replacement := ssetest.StartHoldingPlugin(t, "old", true), ssetest.StartHoldingPlugin(t, "new", true)
	replacement.Release()
	gw := ssetest.StartGateway(t, reloadConfig(30*time.Second, old.Addr))
	conn, client := ssetest.DialConn(t, gw.Addrs[0])
	ctx := testContext(t)

	// Hold calls on the old backend.
	results := make(chan reloadResult, held)
	for range held {
		go reloadCall(ctx, client, results)
	}
	old.WaitHeld(t, held)
	stopWatching := ssetest.RecordStates(conn)

	reloadApply(t, gw, reloadConfig(30*time.Second, replacement.Addr))

	for i := range 3 {
		newCalls := make(chan reloadResult, 1)
		reloadCall(ctx, client, newCalls)
		result := <-newCalls
		if result.err != nil {
			t.Errorf("call %d after the reload = %v, want OK", i, result.err)
		}
		if result.replica != replacement.Name {
			t.Errorf("call %d after the reload served by %q, want %q", i, result.replica, replacement.Name)
		}
	}

	old.Release()
	for range held {
		select {
		case result := <-results:
			if result.err != nil {
				t.Errorf("call held across the reload = %v, want OK", result.err)
			}
			if result.replica != old.Name {
				t.Errorf("call held across the reload served by %q, want %q", result.replica, old.Name)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a call held across the reload did not end within 10s of its release")
		}
	}
	states := stopWatching()
	if !slices.Equal(states, []connectivity.State{connectivity.Ready}) {
		t.Errorf("client connection states during the reload = %v, want only READY", states)
	}
}

// TestReloadDrainTimeout checks that an engine replaced by a reload ends a
// call that is still open after drain_timeout (1s here), with an error,
// instead of keeping the old plugin's connection forever.
func TestReloadDrainTimeout(t *testing.T) {
	t.Parallel()
	const drain = time.Second
	old, replacement := ssetest.StartHoldingPlugin(t, "old", true), ssetest.StartHoldingPlugin(t, "new", true)
	replacement.Release()
	gw := ssetest.StartGateway(t, reloadConfig(drain, old.Addr))
	_, client := ssetest.DialConn(t, gw.Addrs[0])

	results := make(chan reloadResult, 1)
	go reloadCall(testContext(t), client, results)
	old.WaitHeld(t, 1)
	reloaded := time.Now()
	reloadApply(t, gw, reloadConfig(drain, replacement.Addr))

	select {
	case result := <-results:
		// The message names the reload: the error of the closed
		// connection under the call read as if the client had gone.
		want := "engine R was replaced by a configuration reload, and drain_timeout (1s) passed before the call ended"
		if st := status.Convert(result.err); st.Code() != codes.Unavailable || st.Message() != want {
			t.Errorf("call held past drain_timeout = %v, want Unavailable %q", result.err, want)
		}
		if elapsed := result.ended.Sub(reloaded); elapsed < drain || elapsed > drain+2*time.Second {
			t.Errorf("call held past drain_timeout ended %v after the reload, want between %v and %v", elapsed, drain, drain+2*time.Second)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("call held past drain_timeout still open 10s after the reload")
	}
	record := gw.Logs.WaitFor(t, "drain_timeout passed before the calls of an engine that a reload replaced or removed had ended; they end with Unavailable", 5*time.Second, nil)
	if record["engine"] != "R" || record["calls"] != float64(1) {
		t.Errorf("drain warning engine = %v, calls = %v; want R and 1", record["engine"], record["calls"])
	}
}

// TestReloadMovesWaitingCalls checks that calls waiting for a replica of
// an engine whose plugin is down move to the engine a reload puts in its
// place, with the plugin's new address. They end OK there at once, not
// after the old engine's reconnect_buffer (a minute here).
func TestReloadMovesWaitingCalls(t *testing.T) {
	t.Parallel()
	const waiting = 3
	replacement := ssetest.StartHoldingPlugin(t, "new", false)
	configFor := func(address string) *config.Config {
		cfg := reloadConfig(30*time.Second, address)
		ssetest.ReconnectBuffer(cfg.Engines["R"], time.Minute)
		return cfg
	}
	gw := ssetest.StartGateway(t, configFor(ssetest.FreeAddress(t)))
	_, client := ssetest.DialConn(t, gw.Addrs[0])
	ctx, cancel := context.WithTimeout(testContext(t), 20*time.Second)
	defer cancel()

	results := make(chan reloadResult, waiting)
	for range waiting {
		go reloadCall(ctx, client, results)
	}
	resilWait(t, 10*time.Second, "calls waiting for R's replica", func() bool {
		return resilMetric(t, gw, "ssegw_calls_waiting", `qlik_sse_engine="R"`) == waiting
	})
	reloadApply(t, gw, configFor(replacement.Addr))

	for range waiting {
		result := <-results
		if result.err != nil {
			t.Errorf("call waiting across the reload = %v, want OK from the new engine", result.err)
		} else if result.replica != replacement.Name {
			t.Errorf("call waiting across the reload served by %q, want %q", result.replica, replacement.Name)
		}
	}
	// Each call's record counts the attempt that moved, as the attempts
	// metric does.
	records := callRecords(gw)
	if len(records) != waiting {
		t.Fatalf("call records = %d, want %d", len(records), waiting)
	}
	for _, record := range records {
		if got := attempts(record); got != 2 {
			t.Errorf("call record attempts = %d, want 2: the one that moved and the one that served", got)
		}
	}
	if got := resilMetric(t, gw, "ssegw_call_attempts_total", `qlik_sse_engine="R"`); got != 2*waiting {
		t.Errorf("ssegw_call_attempts_total = %v, want %d", got, 2*waiting)
	}
}

// TestReloadMovedCallKeepsItsWait checks that a call that a reload moves
// to the new engine waits there only for what is left of
// reconnect_buffer. Each move once started the wait again, so reloads
// every few seconds held a call for as long as they went on.
func TestReloadMovedCallKeepsItsWait(t *testing.T) {
	t.Parallel()
	const buffer = 2 * time.Second
	dead := ssetest.FreeAddress(t)
	configFor := func(probeInterval time.Duration) *config.Config {
		cfg := reloadConfig(30*time.Second, dead)
		ssetest.ReconnectBuffer(cfg.Engines["R"], buffer)
		cfg.Engines["R"].ProbeInterval = probeInterval
		return cfg
	}
	gw := ssetest.StartGateway(t, configFor(10*time.Second))
	_, client := ssetest.DialConn(t, gw.Addrs[0])

	results := make(chan reloadResult, 1)
	start := time.Now()
	go reloadCall(testContext(t), client, results)
	resilWait(t, 10*time.Second, "a call waiting for R's replica", func() bool {
		return resilMetric(t, gw, "ssegw_calls_waiting", `qlik_sse_engine="R"`) == 1
	})
	// The scenario, not a synchronisation: half of the buffer passes
	// before the reload.
	time.Sleep(buffer / 2)
	reloadApply(t, gw, configFor(11*time.Second))

	result := <-results
	elapsed := time.Since(start)
	if st := status.Convert(result.err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "no replica ready") {
		t.Fatalf("call = %v, want Unavailable once reconnect_buffer is spent", result.err)
	}
	// A wait started again would end one and a half buffers after the
	// call; the margin allows for timers on a slow machine.
	if limit := buffer + buffer/4; elapsed > limit {
		t.Errorf("the call took %v, want at most %v: reconnect_buffer (%v) bounds its waits on both engines", elapsed, limit, buffer)
	}
}

// TestReloadSpentBufferMessage checks the status of a call that a reload
// moves to an engine whose reconnect_buffer the call has already spent
// waiting: it goes without waiting, and its message says why. It once got
// only "no plugin reachable".
func TestReloadSpentBufferMessage(t *testing.T) {
	t.Parallel()
	dead := ssetest.FreeAddress(t)
	configFor := func(buffer time.Duration) *config.Config {
		cfg := reloadConfig(30*time.Second, dead)
		ssetest.ReconnectBuffer(cfg.Engines["R"], buffer)
		return cfg
	}
	gw := ssetest.StartGateway(t, configFor(time.Minute))
	_, client := ssetest.DialConn(t, gw.Addrs[0])

	results := make(chan reloadResult, 1)
	go reloadCall(testContext(t), client, results)
	resilWait(t, 10*time.Second, "a call waiting for R's replica", func() bool {
		return resilMetric(t, gw, "ssegw_calls_waiting", `qlik_sse_engine="R"`) == 1
	})
	// The scenario, not a synchronisation: the call waits longer than the
	// new engine's reconnect_buffer before the reload.
	time.Sleep(200 * time.Millisecond)
	reloadApply(t, gw, configFor(100*time.Millisecond))

	result := <-results
	want := "engine R: no replica ready, and the call had spent its reconnect_buffer (100ms) waiting before"
	if st := status.Convert(result.err); st.Code() != codes.Unavailable || !strings.HasPrefix(st.Message(), want) {
		t.Errorf("call moved with its buffer spent = %v, want Unavailable starting %q", result.err, want)
	}
}

// TestReloadRemovedEngineKeepsWaitingCall checks that a call waiting for
// a replica of an engine that a reload removes is not matched again, since
// that would end it with NotFound at once. It stays on its engine, which
// ends it when drain_timeout (1s here) has passed.
func TestReloadRemovedEngineKeepsWaitingCall(t *testing.T) {
	t.Parallel()
	const drain = time.Second
	plugin := ssetest.StartHoldingPlugin(t, "r", false)
	withGone := func(gone bool) *config.Config {
		cfg := reloadConfig(drain, plugin.Addr)
		if gone {
			cfg.Engines["Gone"] = ssetest.ReconnectBuffer(ssetest.Engine(ssetest.FreeAddress(t)), time.Minute)
			cfg.ApplyDefaults()
		}
		return cfg
	}
	gw := ssetest.StartGateway(t, withGone(true))
	_, client := ssetest.DialConn(t, gw.Addrs[0])
	ctx, cancel := context.WithTimeout(testContext(t), 20*time.Second)
	defer cancel()
	results := make(chan reloadResult, 1)
	go reloadCall(ctx, client, results, routing.EngineHeader, "Gone")
	resilWait(t, 10*time.Second, "a call waiting for Gone's replica", func() bool {
		return resilMetric(t, gw, "ssegw_calls_waiting", `qlik_sse_engine="Gone"`) == 1
	})
	reloaded := time.Now()
	reloadApply(t, gw, withGone(false))

	result := <-results
	want := "engine Gone was removed by a configuration reload, and drain_timeout (1s) passed before the call ended"
	if st := status.Convert(result.err); st.Code() != codes.Unavailable || st.Message() != want {
		t.Errorf("call waiting on the removed engine = %v, want Unavailable %q", result.err, want)
	}
	if elapsed := result.ended.Sub(reloaded); elapsed < drain {
		t.Errorf("call waiting on the removed engine ended %v after the reload, want after drain_timeout (%v)", elapsed, drain)
	}
	// The engine's waiting gauge goes once its calls have ended, rather
	// than stay at 0 for an engine that no longer exists.
	resilWait(t, 10*time.Second, "no waiting gauge for the removed engine", func() bool {
		return resilMetric(t, gw, "ssegw_calls_waiting", `qlik_sse_engine="Gone"`) == -1
	})
}

// TestReloadRenamedEngineMovesWaitingCall checks that a call waiting on
// the listener's default engine moves when a reload renames that engine
// and the listener's default follows, since a new call would be served by
// the renamed engine.
func TestReloadRenamedEngineMovesWaitingCall(t *testing.T) {
	t.Parallel()
	replacement := ssetest.StartHoldingPlugin(t, "new", false)
	named := func(name, address string) *config.Config {
		engine := ssetest.ReconnectBuffer(ssetest.Engine(address), time.Minute)
		cfg := &config.Config{
			Listeners:    []config.Listener{{Address: "127.0.0.1:0", Engine: name, Insecure: true}},
			Engines:      map[string]*config.Engine{name: engine},
			DrainTimeout: 30 * time.Second,
			Admin:        config.Admin{Address: "127.0.0.1:0"},
		}
		cfg.ApplyDefaults()
		return cfg
	}
	gw := ssetest.StartGateway(t, named("Old", ssetest.FreeAddress(t)))
	_, client := ssetest.DialConn(t, gw.Addrs[0])
	ctx, cancel := context.WithTimeout(testContext(t), 20*time.Second)
	defer cancel()
	results := make(chan reloadResult, 1)
	go reloadCall(ctx, client, results)
	resilWait(t, 10*time.Second, "a call waiting for Old's replica", func() bool {
		return resilMetric(t, gw, "ssegw_calls_waiting", `qlik_sse_engine="Old"`) == 1
	})
	reloadApply(t, gw, named("New", replacement.Addr))

	if result := <-results; result.err != nil || result.replica != replacement.Name {
		t.Errorf("call waiting across the rename = %v from %q, want OK from %q", result.err, result.replica, replacement.Name)
	}
}

// TestReloadKeepsUnchangedEngine checks that a reload that changes only
// engine Py keeps engine R as it is: R's plugin gets no new connection,
// while Py's new plugin is connected and serves calls. Calls choose their
// engine with the x-sse-engine header.
func TestReloadKeepsUnchangedEngine(t *testing.T) {
	t.Parallel()
	pluginR, oldPy, newPy := ssetest.StartHoldingPlugin(t, "r", true), ssetest.StartHoldingPlugin(t, "py-old", true), ssetest.StartHoldingPlugin(t, "py-new", true)
	for _, p := range []*ssetest.HoldingPlugin{pluginR, oldPy, newPy} {
		p.Release()
	}
	configWith := func(py string) *config.Config {
		cfg := reloadConfig(30*time.Second, pluginR.Addr)
		cfg.Engines["Py"] = ssetest.Engine(py)
		cfg.ApplyDefaults()
		return cfg
	}
	gw := ssetest.StartGateway(t, configWith(oldPy.Addr))
	_, client := ssetest.DialConn(t, gw.Addrs[0])
	ctx := testContext(t)

	// served makes one call to engine and returns the replica that served it.
	served := func(engine string) string {
		t.Helper()
		results := make(chan reloadResult, 1)
		reloadCall(ctx, client, results, routing.EngineHeader, engine)
		result := <-results
		if result.err != nil {
			t.Fatalf("call to %s = %v, want OK", engine, result.err)
		}
		return result.replica
	}
	if got := served("R"); got != "r" {
		t.Fatalf("call to R before the reload served by %q, want r", got)
	}
	// The pool's and the probe's connection.
	resilWait(t, 10*time.Second, "two connections to R's plugin", func() bool { return pluginR.Conns.Load() == 2 })

	reloadApply(t, gw, configWith(newPy.Addr))
	record := gw.Logs.WaitFor(t, "configuration reloaded", 5*time.Second, nil)
	if got := fmt.Sprint(record["new_or_changed"], record["replaced_or_removed"]); got != "[Py] [Py]" {
		t.Errorf("reload record names new or changed, replaced or removed engines %s, want [Py] [Py]", got)
	}

	if got := served("Py"); got != "py-new" {
		t.Errorf("call to Py after the reload served by %q, want py-new", got)
	}
	if got := served("R"); got != "r" {
		t.Errorf("call to R after the reload served by %q, want r", got)
	}
	if got := pluginR.Conns.Load(); got != 2 {
		t.Errorf("connections made to R's plugin = %d, want 2: the reload replaced the unchanged engine", got)
	}
	if got := newPy.Conns.Load(); got == 0 {
		t.Errorf("connections made to Py's new plugin = 0, want some")
	}
}

// TestReloadKeepsListenerEngines checks that a reload with the same two
// listeners, both on port 0, leaves each listener with its own default
// engine. Listeners on port 0 share the address text "127.0.0.1:0", so a
// reload that matches listeners by that text gives both the last one's
// engine.
//
// NOTE: this fails while Reload matches listeners by their configured
// address.
func TestReloadKeepsListenerEngines(t *testing.T) {
	t.Parallel()
	pluginR, pluginPy := ssetest.StartHoldingPlugin(t, "r", true), ssetest.StartHoldingPlugin(t, "py", true)
	pluginR.Release()
	pluginPy.Release()
	newConfig := func() *config.Config {
		cfg := reloadConfig(30*time.Second, pluginR.Addr)
		cfg.Listeners = append(cfg.Listeners, config.Listener{Address: "127.0.0.1:0", Engine: "Py", Insecure: true})
		cfg.Engines["Py"] = ssetest.Engine(pluginPy.Addr)
		cfg.ApplyDefaults()
		return cfg
	}
	gw := ssetest.StartGateway(t, newConfig())
	_, clientR := ssetest.DialConn(t, gw.Addrs[0])
	_, clientPy := ssetest.DialConn(t, gw.Addrs[1])

	reloadApply(t, gw, newConfig())

	for _, tt := range []struct {
		listener int
		client   ssepb.ConnectorClient
		want     string
	}{{0, clientR, "r"}, {1, clientPy, "py"}} {
		results := make(chan reloadResult, 1)
		reloadCall(testContext(t), tt.client, results)
		result := <-results
		if result.err != nil {
			t.Errorf("call on listener %d after the reload = %v, want OK", tt.listener, result.err)
		}
		if result.replica != tt.want {
			t.Errorf("call on listener %d after the reload served by %q, want %q", tt.listener, result.replica, tt.want)
		}
	}
}

// TestReloadReportsRestartOnlyChanges checks that a reload that changes
// limits, the listeners and state_dir returns a warning for each, keeps
// serving on the listener it has, and applies what it can. A second reload
// of the same file warns again, since the changes still wait for a start.
func TestReloadReportsRestartOnlyChanges(t *testing.T) {
	t.Parallel()
	plugin := ssetest.StartHoldingPlugin(t, "only", true)
	plugin.Release()
	gw := ssetest.StartGateway(t, reloadConfig(30*time.Second, plugin.Addr))
	_, client := ssetest.DialConn(t, gw.Addrs[0])

	cfg := reloadConfig(30*time.Second, plugin.Addr)
	cfg.Limits.MaxMessageSize = 8 << 20
	cfg.Listeners = append(cfg.Listeners, config.Listener{Address: "127.0.0.1:0", Engine: "R", Insecure: true})
	cfg.StateDir = t.TempDir()
	for reload := range 2 {
		warnings, err := gw.Reload(cfg)
		if err != nil {
			t.Fatalf("Reload() = %v, want nil", err)
		}
		for _, want := range []string{"limits changed", "listeners (addresses or security) changed", "state_dir changed"} {
			if !slices.ContainsFunc(warnings, func(w string) bool { return strings.Contains(w, want) }) {
				t.Errorf("reload %d: Reload() warnings = %q, want one containing %q", reload+1, warnings, want)
			}
		}
	}

	results := make(chan reloadResult, 1)
	reloadCall(testContext(t), client, results)
	if result := <-results; result.err != nil {
		t.Errorf("call after the reload = %v, want OK", result.err)
	}
	if got := len(gw.Gateway.Addrs()); got != 1 {
		t.Errorf("listeners after the reload = %d, want 1 until the next start", got)
	}
}

// TestReloadAfterShutdownRejected checks that a reload that comes once the
// gateway has begun to stop is rejected, and starts no engine that nothing
// would close.
func TestReloadAfterShutdownRejected(t *testing.T) {
	t.Parallel()
	gw := ssetest.StartGateway(t, reloadConfig(time.Second, "127.0.0.1:1"))
	if err := gw.Shutdown(testContext(t)); err != nil {
		t.Fatalf("Shutdown() = %v, want nil", err)
	}
	next := reloadConfig(time.Second, "127.0.0.1:2")
	if _, err := gw.Reload(next); err == nil || !strings.Contains(err.Error(), "stopping") {
		t.Errorf("Reload() after Shutdown = %v, want an error saying the gateway is stopping", err)
	}
}

// TestReloadChangedEngineKeepsCapabilities changes engine R's
// max_in_flight while its only plugin is down, without a state_dir. The
// engine that replaces R keeps the capabilities the old one had learnt, so
// /readyz stays ready and GetCapabilities is answered at once. Before, the
// new engine looked for them only in the state folder, and Qlik's
// GetCapabilities waited reconnect_buffer and failed.
func TestReloadChangedEngineKeepsCapabilities(t *testing.T) {
	t.Parallel()
	want := &ssepb.Capabilities{PluginIdentifier: "kept", Functions: []*ssepb.FunctionDefinition{{FunctionId: 0, Name: "Echo"}}}
	plugin := ssetest.StartPlugin(t, &ssetest.Connector{
		Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) { return want, nil },
	})
	stateDir := t.TempDir()
	configWith := func(maxInFlight int) *config.Config {
		cfg := reloadConfig(30*time.Second, plugin.Addr)
		cfg.Engines["R"].MaxInFlight = maxInFlight
		cfg.StateDir = stateDir
		cfg.ApplyDefaults()
		return cfg
	}
	gw := ssetest.StartGateway(t, configWith(2))
	gw.Logs.WaitFor(t, "capabilities agreed", 10*time.Second, nil)
	plugin.Server.Stop()
	gw.Logs.WaitFor(t, "replica lost its connection", 10*time.Second, nil)

	reloadApply(t, gw, configWith(3))
	gw.Logs.WaitFor(t, "configuration reloaded", 5*time.Second, nil)
	// The replaced engine's capabilities are those it stored, or newer:
	// one record, not a second one with the state folder's older time.
	if kept, loaded := gw.Logs.Records("capabilities kept from the engine the reload replaced"), gw.Logs.Records("capabilities loaded from the state folder"); len(kept) != 1 || len(loaded) != 0 {
		t.Errorf("got %d records of capabilities kept and %d loaded from the state folder, want 1 and 0", len(kept), len(loaded))
	}

	if code, _, body := adminGet(t, gw, "/readyz"); code != http.StatusOK {
		t.Errorf("GET /readyz after the reload = %d %q, want 200", code, body)
	}
	_, client := ssetest.DialConn(t, gw.Addrs[0])
	ctx, cancel := context.WithTimeout(testContext(t), 5*time.Second) // reconnect_buffer is 20s
	defer cancel()
	got, err := client.GetCapabilities(ctx, &ssepb.Empty{})
	if err != nil {
		t.Fatalf("GetCapabilities after the reload with the plugin down = %v, want the capabilities learnt before", err)
	}
	if !proto.Equal(got, want) {
		t.Errorf("GetCapabilities after the reload = %v, want %v", got, want)
	}
}

// TestReloadWarnsMovedMergeMembers checks that a reload that moves or
// removes members of a merged engine warns which function ids changed,
// since Qlik engines keep calling the ids they learnt. A reload that only
// adds a member at the end changes no id and does not warn.
func TestReloadWarnsMovedMergeMembers(t *testing.T) {
	t.Parallel()
	addresses := map[string]string{}
	for _, name := range []string{"A", "B", "C", "D"} {
		addresses[name] = ssetest.FreeAddress(t)
	}
	configWith := func(members ...string) *config.Config {
		cfg := &config.Config{
			Listeners: []config.Listener{{Address: "127.0.0.1:0", Engine: "M", Insecure: true}},
			Engines:   map[string]*config.Engine{"M": {Merge: members}},
			Admin:     config.Admin{Address: "127.0.0.1:0"}, // not the default port
		}
		for name, address := range addresses {
			cfg.Engines[name] = ssetest.Engine(address)
		}
		cfg.ApplyDefaults()
		return cfg
	}
	const warning = "merged engine's function ids changed; restart the Qlik engines that use it, since each calls functions by the ids it learnt when it started"
	gw := ssetest.StartGateway(t, configWith("A", "B", "C"))

	reloadApply(t, gw, configWith("A", "B", "C", "D"))
	reloadApply(t, gw, configWith("A", "C", "D"))
	records := gw.Logs.Records(warning)
	if len(records) != 1 {
		t.Fatalf("got %d warnings about changed ids after adding D, then removing B, want 1: %v", len(records), records)
	}
	want := []any{"B no longer merged (ids 1000 to 1999)", "C moved from ids 2000 to 2999 to ids 1000 to 1999", "D moved from ids 3000 to 3999 to ids 2000 to 2999"}
	if got, _ := records[0]["changes"].([]any); !slices.Equal(got, want) {
		t.Errorf("warning changes = %q, want %q", got, want)
	}
	if records[0]["engine"] != "M" {
		t.Errorf("warning engine = %v, want M", records[0]["engine"])
	}

	// Each reload logs the settings of the engines it starts, as the start
	// does: M three times, the kept members once.
	var logged []string
	for _, record := range gw.Logs.Records("engine") {
		logged = append(logged, fmt.Sprintf("%v %v", record["engine"], record["merge"]))
	}
	slices.Sort(logged)
	wantLogged := []string{"A <nil>", "B <nil>", "C <nil>", "D <nil>", "M [A B C D]", "M [A B C]", "M [A C D]"}
	if !slices.Equal(logged, wantLogged) {
		t.Errorf("engine records = %q, want %q", logged, wantLogged)
	}
}

// TestReloadReorderedListeners checks that a reload whose file lists the
// same listeners in another order warns of nothing, since a restart would
// open the same ones, and applies each listener's engine by its address.
// Each reload once warned that the listeners and their TLS would change
// at the next start.
func TestReloadReorderedListeners(t *testing.T) {
	t.Parallel()
	plugin := ssetest.StartHoldingPlugin(t, "only", true)
	plugin.Release()
	certs := ssetest.NewCerts(t)
	tlsAddress, plainAddress := ssetest.FreeAddress(t), ssetest.FreeAddress(t)
	withListeners := func(listeners ...config.Listener) *config.Config {
		cfg := reloadConfig(30*time.Second, plugin.Addr)
		cfg.Engines["S"] = ssetest.Engine(plugin.Addr)
		cfg.Listeners = listeners
		cfg.ApplyDefaults()
		return cfg
	}
	secure := config.Listener{Address: tlsAddress, Engine: "R", TLS: &config.ServerTLS{Dir: certs.GatewayDir}}
	plain := config.Listener{Address: plainAddress, Engine: "R", Insecure: true}
	gw := ssetest.StartGateway(t, withListeners(secure, plain))

	plain.Engine = "S"
	reloadApply(t, gw, withListeners(plain, secure))

	listeners := pageText(pageElements(fetchStatusPage(t, gw), func(n *html.Node) bool { return n.Data == "p" })[0])
	for _, want := range []string{tlsAddress + " (mutual TLS, R)", plainAddress + " (plaintext, S)"} {
		if !strings.Contains(listeners, want) {
			t.Errorf("listeners after the reload = %q, want it to contain %q", listeners, want)
		}
	}
}

// TestReloadMarksReplacedEngineLogs checks that an engine that a reload
// replaced, and that still drains a call, marks its records replaced=true.
// It probes its replicas as the engine that replaced it does, and once
// logged each of their events a second time with nothing to tell the two
// apart.
func TestReloadMarksReplacedEngineLogs(t *testing.T) {
	t.Parallel()
	var failing atomic.Bool
	held, release := make(chan struct{}, 1), make(chan struct{})
	plugin := ssetest.StartPlugin(t, &ssetest.Connector{
		Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
			if failing.Load() {
				return nil, status.Error(codes.Internal, "capabilities unavailable")
			}
			return &ssepb.Capabilities{PluginIdentifier: "probed"}, nil
		},
		Execute: func(s ssetest.Stream) error {
			held <- struct{}{}
			<-release
			return nil
		},
	})
	defer close(release)
	withTimeout := func(timeout time.Duration) *config.Config {
		cfg := reloadConfig(30*time.Second, plugin.Addr)
		cfg.Engines["R"].RequestTimeout = timeout
		cfg.Engines["R"].ProbeInterval = 100 * time.Millisecond
		return cfg
	}
	gw := ssetest.StartGateway(t, withTimeout(time.Minute))
	_, client := ssetest.DialConn(t, gw.Addrs[0])
	results := make(chan reloadResult, 1)
	go reloadCall(testContext(t), client, results)
	<-held

	// The old engine drains the held call while both engines probe.
	reloadApply(t, gw, withTimeout(2*time.Minute))
	failing.Store(true)

	const message = "replica answers GetCapabilities with an error; its functions are unknown"
	var marked, unmarked int
	deadline := time.Now().Add(10 * time.Second)
	for marked == 0 || unmarked == 0 {
		marked, unmarked = 0, 0
		for _, record := range gw.Logs.Records(message) {
			if record["replaced"] == true {
				marked++
			} else {
				unmarked++
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s, %d records %q marked replaced and %d not, want at least one of each:\n%s", marked, message, unmarked, gw.Logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
