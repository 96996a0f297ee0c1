package routing

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/ssepb"
	"github.com/ssegw/ssegw/tlsutil"
)

// reconcilePlugin is a plugin on loopback whose function list a test can
// change, and which counts the GetCapabilities and ExecuteFunction calls
// it gets. While unavailable is set, it responds to GetCapabilities with
// Unavailable, as a plugin that is restarting does behind a proxy. While
// broken is set, it responds with Internal, as a plugin whose
// GetCapabilities has a bug.
type reconcilePlugin struct {
	ssepb.UnimplementedConnectorServer
	addr         string
	server       *grpc.Server
	capabilities atomic.Pointer[ssepb.Capabilities]
	unavailable  atomic.Bool
	broken       atomic.Bool
	probes       atomic.Int64
	calls        atomic.Int64
}

func (p *reconcilePlugin) GetCapabilities(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
	p.probes.Add(1)
	if p.unavailable.Load() {
		return nil, status.Error(codes.Unavailable, "restarting")
	}
	if p.broken.Load() {
		return nil, status.Error(codes.Internal, "capabilities broken")
	}
	return p.capabilities.Load(), nil
}

func (p *reconcilePlugin) ExecuteFunction(stream grpc.BidiStreamingServer[ssepb.BundledRows, ssepb.BundledRows]) error {
	p.calls.Add(1)
	for {
		if _, err := stream.Recv(); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
	}
}

// offer makes the plugin list functions named names, with ids 0, 1, ...
func (p *reconcilePlugin) offer(names ...string) {
	capabilities := &ssepb.Capabilities{PluginIdentifier: "plugin at " + p.addr}
	for i, name := range names {
		capabilities.Functions = append(capabilities.Functions, &ssepb.FunctionDefinition{FunctionId: int32(i), Name: name})
	}
	p.capabilities.Store(capabilities)
}

// startReconcilePlugin serves a plugin offering the functions names on a
// free loopback port until the test ends.
func startReconcilePlugin(t *testing.T, names ...string) *reconcilePlugin {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &reconcilePlugin{addr: lis.Addr().String(), server: grpc.NewServer()}
	p.offer(names...)
	ssepb.RegisterConnectorServer(p.server, p)
	go p.server.Serve(lis)
	t.Cleanup(p.server.Stop)
	return p
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newReconcileEngine builds engine R over plugins, with round_robin and
// its state in stateDir ("" for none), without starting its probes: the
// test probes and reconciles by hand. The engine's log goes to log.
func newReconcileEngine(t *testing.T, stateDir string, log io.Writer, plugins ...*reconcilePlugin) *Engine {
	t.Helper()
	cfg := &config.Engine{
		Name:          "R",
		ProbeInterval: time.Minute,
		ProbeTimeout:  5 * time.Second,
		Balancer:      config.BalancerRoundRobin,
		MaxWaiting:    config.DefaultMaxWaiting,
		ReplayBuffer:  config.DefaultReplayBuffer,
		MaxAttempts:   config.DefaultMaxAttempts,
	}
	for _, plugin := range plugins {
		cfg.Backends = append(cfg.Backends, config.Backend{Address: plugin.addr})
	}
	e, err := NewEngine(cfg, EngineOptions{
		PoolOptions: PoolOptions{
			Limits:    config.Limits{MaxMessageSize: config.DefaultMaxMessageSize, MaxHeaderListSize: config.DefaultMaxHeaderListSize},
			Keepalive: config.Keepalive{BackendPingInterval: config.DefaultBackendPingInterval},
		},
		Logger:   slog.New(slog.NewJSONHandler(log, nil)),
		StateDir: stateDir,
	})
	if err != nil {
		t.Fatalf("NewEngine() = %v", err)
	}
	t.Cleanup(e.Close)
	return e
}

// probeAndReconcile probes the engine's replicas at the given indexes, in
// that order, then reconciles once.
func probeAndReconcile(t *testing.T, e *Engine, indexes ...int) {
	t.Helper()
	for _, i := range indexes {
		e.Replicas()[i].probe(context.Background(), 5*time.Second)
	}
	e.reconcile()
}

// replicaStates returns the state of each of the engine's replicas.
func replicaStates(e *Engine) []ReplicaState {
	var states []ReplicaState
	for _, replica := range e.Replicas() {
		states = append(states, replica.Status().State)
	}
	return states
}

// checkReconciled checks, at the moment named by when, that the engine's
// agreed list is the one plugin returns and that its replicas are in
// states, in order.
func checkReconciled(t *testing.T, e *Engine, when string, plugin *reconcilePlugin, states ...ReplicaState) {
	t.Helper()
	if got := e.Capabilities(); !proto.Equal(got.Message, plugin.capabilities.Load()) {
		t.Errorf("capabilities agreed %s = %v, want %v", when, got.Message, plugin.capabilities.Load())
	}
	if got := replicaStates(e); fmt.Sprint(got) != fmt.Sprint(states) {
		t.Errorf("replica states %s = %v, want %v", when, got, states)
	}
}

// checkCallsReach makes calls through the engine's pool until every plugin
// in serving has had one, then 20 more, and checks that no plugin in idle
// got any.
func checkCallsReach(t *testing.T, e *Engine, serving, idle []*reconcilePlugin) {
	t.Helper()
	client := ssepb.NewConnectorClient(e.Pool.Conn())
	call := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		stream, err := client.ExecuteFunction(ctx, grpc.WaitForReady(true))
		if err != nil {
			t.Fatalf("ExecuteFunction() through the pool = %v", err)
		}
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("call through the pool = %v, want OK", err)
		}
	}
	before := make([]int64, len(idle))
	for i, plugin := range idle {
		before[i] = plugin.calls.Load()
	}
	// The pool logs no record when a connection is ready, so call until
	// each serving plugin has had a call.
	deadline := time.Now().Add(10 * time.Second)
	for _, plugin := range serving {
		for start := plugin.calls.Load(); plugin.calls.Load() == start; {
			if time.Now().After(deadline) {
				t.Fatalf("plugin %s got no call through the pool within 10s, want some", plugin.addr)
			}
			call()
		}
	}
	for range 20 {
		call()
	}
	for i, plugin := range idle {
		if got := plugin.calls.Load() - before[i]; got != 0 {
			t.Errorf("plugin %s got %d calls through the pool, want none", plugin.addr, got)
		}
	}
}

// TestReconcileMajority checks that the function list that most healthy
// replicas return becomes the engine's, replacing the one agreed before.
// The replica with other functions is marked disagreeing, names the
// differing function id, and gets no calls. A failing replica neither
// counts nor gets calls.
func TestReconcileMajority(t *testing.T) {
	t.Parallel()
	first, second := startReconcilePlugin(t, "Echo", "Sum"), startReconcilePlugin(t, "Echo", "Sum")
	other, down := startReconcilePlugin(t, "Echo"), startReconcilePlugin(t, "Echo")
	down.server.Stop()
	log := &syncBuffer{}
	e := newReconcileEngine(t, "", log, first, second, other, down)

	// Only the replica with other functions has replied, so its list is the
	// engine's for now.
	probeAndReconcile(t, e, 2, 3)
	if got := len(e.Capabilities().Message.GetFunctions()); got != 1 {
		t.Fatalf("functions agreed with one replica healthy = %d, want 1", got)
	}

	// Two replicas agree on another list, which wins.
	probeAndReconcile(t, e, 0, 1)
	if got := e.Capabilities(); !proto.Equal(got.Message, first.capabilities.Load()) {
		t.Errorf("capabilities agreed = %v, want the majority's %v", got.Message, first.capabilities.Load())
	}
	want := []ReplicaState{ReplicaHealthy, ReplicaHealthy, ReplicaDisagreeing, ReplicaFailing}
	if got := replicaStates(e); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("replica states = %v, want %v", got, want)
	}
	if got, want := e.Replicas()[2].Status().LastError, "functions differ from the engine's at ids [1]"; got != want {
		t.Errorf("disagreeing replica's last error = %q, want %q", got, want)
	}
	if got := strings.Count(log.String(), `"msg":"capabilities agreed"`); got != 2 {
		t.Errorf("got %d capabilities agreed records, want 2; log:\n%s", got, log)
	}
	checkCallsReach(t, e, []*reconcilePlugin{first, second}, []*reconcilePlugin{other})
}

// TestReconcileTieKeepsCurrent checks that when as many healthy replicas
// return one function list as another, the engine keeps the list it
// agreed before, whichever that is, and the other replica disagrees.
func TestReconcileTieKeepsCurrent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		order []int // the replica probed first sets the agreed list
	}{
		{name: "first replica agreed first", order: []int{0, 1}},
		{name: "second replica agreed first", order: []int{1, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			plugins := []*reconcilePlugin{startReconcilePlugin(t, "Echo", "Sum"), startReconcilePlugin(t, "Echo")}
			e := newReconcileEngine(t, "", io.Discard, plugins...)
			probeAndReconcile(t, e, tt.order[0])
			probeAndReconcile(t, e, tt.order[1])

			kept, other := plugins[tt.order[0]], plugins[tt.order[1]]
			if got := e.Capabilities(); !proto.Equal(got.Message, kept.capabilities.Load()) {
				t.Errorf("capabilities agreed after a tie = %v, want the earlier %v", got.Message, kept.capabilities.Load())
			}
			if got := e.Replicas()[tt.order[0]].Status().State; got != ReplicaHealthy {
				t.Errorf("state of the replica agreed first = %s, want healthy", got)
			}
			if got := e.Replicas()[tt.order[1]].Status().State; got != ReplicaDisagreeing {
				t.Errorf("state of the other replica = %s, want disagreeing", got)
			}
			checkCallsReach(t, e, []*reconcilePlugin{kept}, []*reconcilePlugin{other})
		})
	}
}

// TestReconcileReplicaAgreesAgain checks that a disagreeing replica stays
// so while it keeps its other functions, and becomes healthy, with calls
// again, once it returns the engine's functions.
func TestReconcileReplicaAgreesAgain(t *testing.T) {
	t.Parallel()
	steady, changing := startReconcilePlugin(t, "Echo", "Sum"), startReconcilePlugin(t, "Echo", "Other")
	log := &syncBuffer{}
	e := newReconcileEngine(t, "", log, steady, changing)
	probeAndReconcile(t, e, 0, 1)
	probeAndReconcile(t, e, 0, 1) // a second probe with the same other functions
	if got := e.Replicas()[1].Status().State; got != ReplicaDisagreeing {
		t.Fatalf("state of the replica with other functions after two probes = %s, want disagreeing", got)
	}
	if got := strings.Count(log.String(), "its functions differ"); got != 1 {
		t.Errorf("got %d warnings about differing functions after two probes, want 1", got)
	}

	healthyRecords := func() int {
		return strings.Count(log.String(), `"msg":"replica healthy`)
	}
	before := healthyRecords()
	changing.offer("Echo", "Sum")
	probeAndReconcile(t, e, 1)
	status := e.Replicas()[1].Status()
	if status.State != ReplicaHealthy {
		t.Errorf("state of the replica that agrees again = %s, want healthy", status.State)
	}
	if status.LastError != "" {
		t.Errorf("last error of the replica that agrees again = %q, want none", status.LastError)
	}
	if got := healthyRecords() - before; got != 1 {
		t.Errorf("got %d records of the replica being healthy again, want 1; log:\n%s", got, log)
	}
	checkCallsReach(t, e, []*reconcilePlugin{steady, changing}, nil)
}

// TestReconcileDownReplicaKeepsList checks that the agreed function list
// stays while the replica that returned it is down, although the replica
// with other functions is then the only one that responds. Qlik may keep
// function ids of the agreed list, so the other replica gets no calls,
// neither during the outage nor after it.
func TestReconcileDownReplicaKeepsList(t *testing.T) {
	t.Parallel()
	agreed, other := startReconcilePlugin(t, "Echo", "Sum"), startReconcilePlugin(t, "Echo", "Other")
	log := &syncBuffer{}
	e := newReconcileEngine(t, "", log, agreed, other)
	probeAndReconcile(t, e, 0, 1)
	if got := e.Capabilities(); !proto.Equal(got.Message, agreed.capabilities.Load()) {
		t.Fatalf("capabilities agreed = %v, want the first replica's %v", got.Message, agreed.capabilities.Load())
	}

	// The agreed replica is down: nothing is fit for calls.
	agreed.unavailable.Store(true)
	probeAndReconcile(t, e, 0, 1)
	checkReconciled(t, e, "while the agreed replica is down", agreed, ReplicaFailing, ReplicaDisagreeing)
	if got := eligibleAddresses(e); len(got) != 0 {
		t.Errorf("pool uses %v while the agreed replica is down, want none", got)
	}

	// It is back, and takes every call again.
	agreed.unavailable.Store(false)
	probeAndReconcile(t, e, 0, 1)
	checkReconciled(t, e, "after the agreed replica is back", agreed, ReplicaHealthy, ReplicaDisagreeing)
	if got := strings.Count(log.String(), `"msg":"capabilities agreed"`); got != 1 {
		t.Errorf("got %d capabilities agreed records, want 1; log:\n%s", got, log)
	}
	checkCallsReach(t, e, []*reconcilePlugin{agreed}, []*reconcilePlugin{other})
}

// TestReconcileDownReplicaVoteExpires checks that a replica that stays
// down votes for the agreed list only for reconnect_buffer. When every
// replica was upgraded at once and one never came back, the live one's new
// list becomes the agreed one and takes the calls. Here reconnect_buffer
// is a nanosecond, so the vote has expired by the next probe.
func TestReconcileDownReplicaVoteExpires(t *testing.T) {
	t.Parallel()
	dead, live := startReconcilePlugin(t, "Echo", "Sum"), startReconcilePlugin(t, "Echo", "Sum")
	e := newReconcileEngine(t, "", io.Discard, dead, live)
	grace := time.Nanosecond
	e.Config.ReconnectBuffer = &grace
	probeAndReconcile(t, e, 0, 1)

	dead.unavailable.Store(true)
	live.offer("Echo", "Sum", "Forecast")
	probeAndReconcile(t, e, 0, 1)
	checkReconciled(t, e, "once the down replica's vote expired", live, ReplicaFailing, ReplicaHealthy)
	checkCallsReach(t, e, []*reconcilePlugin{live}, nil)
}

// TestReconcileMajorityOutvotesDownReplica checks that a replica that is
// down keeps the agreed list only as one vote: two replicas that respond
// with another list still replace it, as after a rolling upgrade.
func TestReconcileMajorityOutvotesDownReplica(t *testing.T) {
	t.Parallel()
	old := startReconcilePlugin(t, "Echo")
	first, second := startReconcilePlugin(t, "Echo"), startReconcilePlugin(t, "Echo")
	e := newReconcileEngine(t, "", io.Discard, old, first, second)
	probeAndReconcile(t, e, 0, 1, 2)

	old.unavailable.Store(true)
	first.offer("Echo", "Sum")
	second.offer("Echo", "Sum")
	probeAndReconcile(t, e, 0, 1, 2)
	checkReconciled(t, e, "after two replicas were upgraded", first, ReplicaFailing, ReplicaHealthy, ReplicaHealthy)
	checkCallsReach(t, e, []*reconcilePlugin{first, second}, []*reconcilePlugin{old})
}

// TestReconcileUnprobedStaticReplica checks that a configured replica
// takes calls before its first probe, as every replica does when the
// gateway starts, also after another replica's probe reconciled.
func TestReconcileUnprobedStaticReplica(t *testing.T) {
	t.Parallel()
	probed, unprobed := startReconcilePlugin(t, "Echo"), startReconcilePlugin(t, "Echo")
	e := newReconcileEngine(t, "", io.Discard, probed, unprobed)
	probeAndReconcile(t, e, 0)
	if got := e.Replicas()[1].Status().State; got != ReplicaUnknown {
		t.Fatalf("state of the replica not probed = %s, want unknown", got)
	}
	if got, want := eligibleAddresses(e), []string{probed.addr, unprobed.addr}; !slices.Equal(got, want) {
		t.Errorf("pool uses %v, want %v", got, want)
	}
	checkCallsReach(t, e, []*reconcilePlugin{probed, unprobed}, nil)
}

// eligibleAddresses returns the addresses of the replicas the engine's
// pool uses.
func eligibleAddresses(e *Engine) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.eligible)
}

// blockingPlugin answers GetCapabilities only once release is closed, and
// signals each GetCapabilities call that arrives on arrived.
type blockingPlugin struct {
	ssepb.UnimplementedConnectorServer
	addr    string
	names   []string
	arrived chan struct{}
	release chan struct{}
}

func (p *blockingPlugin) GetCapabilities(ctx context.Context, _ *ssepb.Empty) (*ssepb.Capabilities, error) {
	select {
	case p.arrived <- struct{}{}:
	default:
	}
	select {
	case <-p.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	capabilities := &ssepb.Capabilities{PluginIdentifier: "blocking plugin"}
	for i, name := range p.names {
		capabilities.Functions = append(capabilities.Functions, &ssepb.FunctionDefinition{FunctionId: int32(i), Name: name})
	}
	return capabilities, nil
}

// startBlockingPlugin serves a blockingPlugin offering the functions names
// on a free loopback port until the test ends.
func startBlockingPlugin(t *testing.T, names ...string) *blockingPlugin {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &blockingPlugin{addr: lis.Addr().String(), names: names, arrived: make(chan struct{}, 10), release: make(chan struct{})}
	server := grpc.NewServer()
	ssepb.RegisterConnectorServer(server, p)
	go server.Serve(lis)
	t.Cleanup(server.Stop)
	return p
}

// TestProbeAnswerAfterConnectionLost checks that a probe whose answer
// comes after the replica lost its connection leaves the replica failing:
// the answer may come from the process before the loss, and the probe
// that the loss started must check the new one.
func TestProbeAnswerAfterConnectionLost(t *testing.T) {
	t.Parallel()
	plugin := startBlockingPlugin(t, "Echo")
	cfg := &config.Engine{Name: "R", ProbeInterval: time.Minute, ProbeTimeout: 5 * time.Second, Balancer: config.BalancerRoundRobin,
		MaxWaiting: config.DefaultMaxWaiting, ReplayBuffer: config.DefaultReplayBuffer, MaxAttempts: config.DefaultMaxAttempts,
		Backends: []config.Backend{{Address: plugin.addr}}}
	e, err := NewEngine(cfg, EngineOptions{
		PoolOptions: PoolOptions{Limits: config.Limits{MaxMessageSize: config.DefaultMaxMessageSize, MaxHeaderListSize: config.DefaultMaxHeaderListSize}},
		Logger:      slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatalf("NewEngine() = %v", err)
	}
	t.Cleanup(e.Close)
	replica := e.Replicas()[0]

	probed := make(chan *Capabilities, 1)
	go func() { probed <- replica.probe(context.Background(), 5*time.Second) }()
	select {
	case <-plugin.arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("the probe did not reach the plugin within 5s")
	}
	replica.lost() // as watchConnection does when the connection breaks
	close(plugin.release)

	if got := <-probed; got != nil {
		t.Errorf("probe() answered after the loss = %v, want nil", got.Message)
	}
	if got := replica.Status().State; got != ReplicaFailing {
		t.Errorf("state after a probe answered across a lost connection = %s, want failing", got)
	}
	// The next probe is the one that counts.
	if got := replica.probe(context.Background(), 5*time.Second); got == nil {
		t.Error("probe() after the loss = nil, want the capabilities")
	}
	if got := replica.Status().State; got != ReplicaHealthy {
		t.Errorf("state after the next probe = %s, want healthy", got)
	}
}

// TestDisagreeingReplicaProbedAtInterval checks that a replica known to
// disagree is probed at probe_interval, a minute here, and not every
// recoveryProbeInterval as a failing one is.
func TestDisagreeingReplicaProbedAtInterval(t *testing.T) {
	t.Parallel()
	agreed, other := startReconcilePlugin(t, "Echo", "Sum"), startReconcilePlugin(t, "Echo")
	e := newReconcileEngine(t, "", io.Discard, agreed, other)
	probeAndReconcile(t, e, 0, 1)
	if got := e.Replicas()[1].Status().State; got != ReplicaDisagreeing {
		t.Fatalf("state of the replica with other functions = %s, want disagreeing", got)
	}

	before := other.probes.Load()
	e.Start()
	// Start probes at once; a second probe would follow within
	// recoveryProbeInterval if the replica counted as recovering.
	time.Sleep(recoveryProbeInterval + 500*time.Millisecond)
	if got := other.probes.Load() - before; got != 1 {
		t.Errorf("disagreeing replica got %d probes in the %v after Start, want 1", got, recoveryProbeInterval+500*time.Millisecond)
	}
	if got := e.Replicas()[1].Status().State; got != ReplicaDisagreeing {
		t.Errorf("state of the replica with other functions after Start = %s, want disagreeing", got)
	}
}

// TestCapabilitiesStoreAndLoad checks that stored capabilities load back
// equal, with the time they were fetched, that no temporary file stays
// behind, and that a missing file or state folder loads as none.
func TestCapabilitiesStoreAndLoad(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "state") // created by the first store
	message := &ssepb.Capabilities{PluginIdentifier: "stored", AllowScript: true,
		Functions: []*ssepb.FunctionDefinition{{FunctionId: 3, Name: "Forecast", Params: []*ssepb.Parameter{{Name: "x", DataType: ssepb.DataType_NUMERIC}}}}}
	// Whole seconds, which every file system keeps as a modification time.
	fetched := time.Now().Add(-time.Hour).Truncate(time.Second)

	if got, err := loadCapabilities(dir, "R"); got != nil || err != nil {
		t.Errorf("loadCapabilities() before any store = %v, %v, want nil, nil", got, err)
	}
	if err := storeCapabilities(dir, "R", NewCapabilities(message, fetched)); err != nil {
		t.Fatalf("storeCapabilities() = %v", err)
	}
	got, err := loadCapabilities(dir, "R")
	if err != nil {
		t.Fatalf("loadCapabilities() = %v", err)
	}
	if !proto.Equal(got.Message, message) {
		t.Errorf("loaded capabilities = %v, want %v", got.Message, message)
	}
	if !got.Fetched.Equal(fetched) {
		t.Errorf("loaded capabilities fetched at %v, want %v", got.Fetched, fetched)
	}
	if got.Function(3).GetName() != "Forecast" {
		t.Errorf("loaded capabilities' function 3 = %v, want Forecast", got.Function(3))
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, entry := range entries {
		names = append(names, entry.Name())
	}
	if len(names) != 1 || names[0] != "capabilities-R.json" {
		t.Errorf("state folder holds %q, want only capabilities-R.json", names)
	}

	// Without a state folder nothing is stored or loaded.
	if err := storeCapabilities("", "R", NewCapabilities(message, fetched)); err != nil {
		t.Errorf("storeCapabilities() without a folder = %v, want nil", err)
	}
	if got, err := loadCapabilities("", "R"); got != nil || err != nil {
		t.Errorf("loadCapabilities() without a folder = %v, %v, want nil, nil", got, err)
	}
}

// TestCapabilitiesStoreIsAtomic checks that a reader never sees a partly
// written file while capabilities are stored again and again: a file
// truncated and then written in place would show up as a decoding error.
func TestCapabilitiesStoreIsAtomic(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const stores = 300
	messages := make([]*ssepb.Capabilities, 2)
	for i := range messages {
		messages[i] = &ssepb.Capabilities{PluginIdentifier: strings.Repeat(fmt.Sprint(i), 20000)}
	}
	if err := storeCapabilities(dir, "R", NewCapabilities(messages[0], time.Now())); err != nil {
		t.Fatal(err)
	}

	done := make(chan struct{})
	var loads, failures atomic.Int64
	var firstFailure atomic.Value
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			loads.Add(1)
			got, err := loadCapabilities(dir, "R")
			if err == nil && got != nil && (proto.Equal(got.Message, messages[0]) || proto.Equal(got.Message, messages[1])) {
				continue
			}
			failures.Add(1)
			firstFailure.CompareAndSwap(nil, fmt.Sprintf("%v, %v", got, err))
		}
	})
	for i := range stores {
		if err := storeCapabilities(dir, "R", NewCapabilities(messages[i%2], time.Now())); err != nil {
			t.Errorf("storeCapabilities() %d = %v", i, err)
		}
	}
	close(done)
	wg.Wait()

	if n := failures.Load(); n > 0 {
		t.Errorf("%d of %d loads during %d stores failed or saw another message, want none; first: %v", n, loads.Load(), stores, firstFailure.Load())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("state folder holds %d files after %d stores, want 1", len(entries), stores)
	}
}

// TestCapabilitiesBadFile checks that a state file that is not valid
// capabilities is reported, with its path, and does not stop the engine.
// The engine starts without capabilities, warns, and stores good ones over
// the bad file once a replica replies.
func TestCapabilitiesBadFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "capabilities-R.json")
	if err := os.WriteFile(path, []byte(`{"functions": [{"functionId": "not a number"`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadCapabilities(dir, "R"); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("loadCapabilities() of a bad file = %v, want an error naming %s", err, path)
	}

	plugin := startReconcilePlugin(t, "Echo")
	log := &syncBuffer{}
	e := newReconcileEngine(t, dir, log, plugin)
	if got := e.Capabilities(); got != nil {
		t.Errorf("Capabilities() after a bad state file = %v, want nil", got.Message)
	}
	if !strings.Contains(log.String(), "reading stored capabilities failed") {
		t.Errorf("log has no warning about the bad state file; log:\n%s", log)
	}

	probeAndReconcile(t, e, 0)
	stored, err := loadCapabilities(dir, "R")
	if err != nil {
		t.Fatalf("loadCapabilities() after a replica answered = %v, want the replica's capabilities", err)
	}
	if !proto.Equal(stored.Message, plugin.capabilities.Load()) {
		t.Errorf("stored capabilities = %v, want %v", stored.Message, plugin.capabilities.Load())
	}
}

// TestEngineLoadsStoredCapabilities checks that an engine stores the
// capabilities its replicas agree on, and that a new engine with the same
// state folder starts with them before any replica replies.
func TestEngineLoadsStoredCapabilities(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	plugin := startReconcilePlugin(t, "Echo", "Sum")
	first := newReconcileEngine(t, dir, io.Discard, plugin)
	probeAndReconcile(t, first, 0)
	first.Close()
	plugin.server.Stop()

	log := &syncBuffer{}
	second := newReconcileEngine(t, dir, log, plugin)
	got := second.Capabilities()
	if got == nil {
		t.Fatalf("Capabilities() of a new engine with a stored state = nil, want the stored ones")
	}
	if !proto.Equal(got.Message, plugin.capabilities.Load()) {
		t.Errorf("Capabilities() of a new engine = %v, want %v", got.Message, plugin.capabilities.Load())
	}
	if !strings.Contains(log.String(), "capabilities loaded from the state folder") {
		t.Errorf("log has no record of the loaded capabilities; log:\n%s", log)
	}
}

// TestTrackRejectedDuringDrain checks the hand-over of a reload. Drain
// waits for a call tracked before it began, and after it began, Track
// rejects calls, which the gateway then matches in the new table.
func TestTrackRejectedDuringDrain(t *testing.T) {
	e := newReconcileEngine(t, "", io.Discard, startReconcilePlugin(t, "Echo"))
	done, ok := e.Track()
	if !ok {
		t.Fatal("Track() before Drain = false, want true")
	}

	drained := make(chan struct{})
	go func() {
		e.Drain(context.Background())
		close(drained)
	}()
	// Drain has begun once Track rejects calls, and it waits for the first.
	// Drain signals nothing when it begins, so poll Track.
	deadline := time.Now().Add(5 * time.Second)
	for {
		later, ok := e.Track()
		if !ok {
			break
		}
		later()
		if time.Now().After(deadline) {
			t.Fatal("Track() still true 5s after Drain began")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case <-drained:
		t.Fatal("Drain returned while a tracked call was under way")
	default:
	}
	done()
	select {
	case <-drained:
	case <-time.After(5 * time.Second):
		t.Fatal("Drain still waiting 5s after the last call ended")
	}
}

// TestForwardedCapabilitiesStored checks that capabilities the gateway
// learnt from a GetCapabilities answer it forwarded, before the first
// probe, are stored and announced once a probe agrees with them, and only
// once. Before, the probe saw no change, so the state folder stayed empty
// and a gateway restarted while the plugins were down had nothing to
// answer Qlik with.
func TestForwardedCapabilitiesStored(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	plugin := startReconcilePlugin(t, "Echo", "Sum")
	log := &syncBuffer{}
	e := newReconcileEngine(t, dir, log, plugin)
	e.SetCapabilities(NewCapabilities(plugin.capabilities.Load(), time.Now())) // as a forwarded answer does

	probeAndReconcile(t, e, 0)
	stored, err := loadCapabilities(dir, "R")
	if err != nil {
		t.Fatalf("loadCapabilities() after the first probe = %v", err)
	}
	if stored == nil {
		t.Fatal("loadCapabilities() after the first probe = nil, want the agreed capabilities")
	}
	if !proto.Equal(stored.Message, plugin.capabilities.Load()) {
		t.Errorf("stored capabilities = %v, want %v", stored.Message, plugin.capabilities.Load())
	}
	if got := strings.Count(log.String(), `"msg":"capabilities agreed"`); got != 1 {
		t.Errorf("got %d capabilities agreed records after the first probe, want 1; log:\n%s", got, log)
	}

	probeAndReconcile(t, e, 0)
	if got := strings.Count(log.String(), `"msg":"capabilities agreed"`); got != 1 {
		t.Errorf("got %d capabilities agreed records after a second probe, want 1; log:\n%s", got, log)
	}
}

// TestAgreedCapabilitiesStoreRetried checks that a write of the agreed
// capabilities that failed is tried again at the next probe, with one
// warning, and that an empty function list is stored too. Before, the list
// counted as stored whatever the write did, and an empty one, whose key is
// the empty string, was never stored or logged.
func TestAgreedCapabilitiesStoreRetried(t *testing.T) {
	t.Parallel()
	// The state folder's path leads through a file at first, so that
	// creating it fails, also for root.
	parent := filepath.Join(t.TempDir(), "parent")
	if err := os.WriteFile(parent, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(parent, "state")
	plugin := startReconcilePlugin(t)
	log := &syncBuffer{}
	e := newReconcileEngine(t, dir, log, plugin)

	probeAndReconcile(t, e, 0)
	if got := strings.Count(log.String(), `"msg":"storing capabilities failed`); got != 1 {
		t.Fatalf("got %d storing failed records, want 1; log:\n%s", got, log)
	}
	if got := strings.Count(log.String(), `"msg":"capabilities agreed"`); got != 1 {
		t.Errorf("got %d capabilities agreed records for the empty list, want 1; log:\n%s", got, log)
	}

	if err := os.Remove(parent); err != nil {
		t.Fatal(err)
	}
	probeAndReconcile(t, e, 0)
	stored, err := loadCapabilities(dir, "R")
	if err != nil || stored == nil {
		t.Fatalf("loadCapabilities() once the folder can be made = %v, %v, want the empty list", stored, err)
	}
	if got := len(stored.Message.GetFunctions()); got != 0 {
		t.Errorf("stored capabilities have %d functions, want 0", got)
	}
	if got := strings.Count(log.String(), `"msg":"storing capabilities failed`); got != 1 {
		t.Errorf("got %d storing failed records after the retry, want 1; log:\n%s", got, log)
	}
}

// TestReconcileBrokenReplicaWithheld checks a replica whose
// GetCapabilities fails with an error status next to one that lists the
// engine's functions. Its functions cannot be compared with the engine's,
// so it gets no calls, with one warning and a state and last error that
// say why, until it lists the engine's functions again. Before, it counted
// as healthy and took every other call, Qlik's GetCapabilities included.
func TestReconcileBrokenReplicaWithheld(t *testing.T) {
	t.Parallel()
	good, broken := startReconcilePlugin(t, "Echo", "Sum"), startReconcilePlugin(t, "Echo", "Sum")
	broken.broken.Store(true)
	log := &syncBuffer{}
	e := newReconcileEngine(t, "", log, good, broken)
	probeAndReconcile(t, e, 0, 1)
	probeAndReconcile(t, e, 0, 1) // a second failure warns no more

	checkReconciled(t, e, "with one replica's GetCapabilities failing", good, ReplicaHealthy, ReplicaUnverified)
	if got, want := e.Replicas()[1].Status().LastError, "capabilities broken"; !strings.Contains(got, want) {
		t.Errorf("last error of the broken replica = %q, want it to contain %q", got, want)
	}
	if got := strings.Count(log.String(), `"msg":"replica gets no calls: GetCapabilities failed`); got != 1 {
		t.Errorf("got %d warnings that the broken replica gets no calls, want 1; log:\n%s", got, log)
	}
	checkCallsReach(t, e, []*reconcilePlugin{good}, []*reconcilePlugin{broken})

	// Its GetCapabilities works again.
	broken.broken.Store(false)
	probeAndReconcile(t, e, 1)
	checkReconciled(t, e, "once the broken replica is mended", good, ReplicaHealthy, ReplicaHealthy)
	checkCallsReach(t, e, []*reconcilePlugin{good, broken}, nil)
}

// TestReconcileBrokenReplicaAlone checks that a replica whose
// GetCapabilities fails keeps its calls while no replica that is up lists
// the engine's functions: alone, beside one that is down, or with
// capabilities only from the state folder.
func TestReconcileBrokenReplicaAlone(t *testing.T) {
	t.Parallel()
	t.Run("alone", func(t *testing.T) {
		t.Parallel()
		broken := startReconcilePlugin(t, "Echo")
		broken.broken.Store(true)
		e := newReconcileEngine(t, "", io.Discard, broken)
		probeAndReconcile(t, e, 0)
		if got := replicaStates(e); fmt.Sprint(got) != "[healthy]" {
			t.Errorf("replica states = %v, want [healthy]", got)
		}
		checkCallsReach(t, e, []*reconcilePlugin{broken}, nil)
	})
	t.Run("capabilities stored", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		broken := startReconcilePlugin(t, "Echo")
		if err := storeCapabilities(dir, "R", NewCapabilities(broken.capabilities.Load(), time.Now())); err != nil {
			t.Fatal(err)
		}
		broken.broken.Store(true)
		e := newReconcileEngine(t, dir, io.Discard, broken)
		probeAndReconcile(t, e, 0)
		if got := replicaStates(e); fmt.Sprint(got) != "[healthy]" {
			t.Errorf("replica states = %v, want [healthy]", got)
		}
		checkCallsReach(t, e, []*reconcilePlugin{broken}, nil)
	})
	t.Run("other replica down", func(t *testing.T) {
		t.Parallel()
		good, broken := startReconcilePlugin(t, "Echo"), startReconcilePlugin(t, "Echo")
		broken.broken.Store(true)
		e := newReconcileEngine(t, "", io.Discard, good, broken)
		probeAndReconcile(t, e, 0, 1)

		// While the other replica is down, the broken one serves the
		// calls, though the other still keeps the engine's functions for
		// reconnect_buffer: withheld, it would fail calls it can serve.
		good.unavailable.Store(true)
		probeAndReconcile(t, e, 0, 1)
		if got := replicaStates(e); fmt.Sprint(got) != "[failing healthy]" {
			t.Errorf("replica states while the other replica is down = %v, want [failing healthy]", got)
		}
		checkCallsReach(t, e, []*reconcilePlugin{broken}, []*reconcilePlugin{good})
		if e.Capabilities() == nil {
			t.Error("engine's capabilities = nil while the other replica is down, want the functions it listed")
		}

		// Once the other replica is back, the broken one is withheld again.
		good.unavailable.Store(false)
		probeAndReconcile(t, e, 0, 1)
		if got := replicaStates(e); fmt.Sprint(got) != "[healthy unverified]" {
			t.Errorf("replica states once the other replica is back = %v, want [healthy unverified]", got)
		}
	})
}

// TestReconcileEmptyListMajority checks that an empty function list wins
// the vote like any other. Its key is the empty string, which the count
// once took for "no list yet", so a lone replica with one function
// outvoted two with none.
func TestReconcileEmptyListMajority(t *testing.T) {
	t.Parallel()
	empty1, empty2, echo := startReconcilePlugin(t), startReconcilePlugin(t), startReconcilePlugin(t, "Echo")
	e := newReconcileEngine(t, "", io.Discard, empty1, empty2, echo)
	probeAndReconcile(t, e, 0, 1, 2)
	if got := replicaStates(e); fmt.Sprint(got) != "[healthy healthy disagreeing]" {
		t.Errorf("replica states = %v, want [healthy healthy disagreeing]", got)
	}
	if got := e.Capabilities(); got == nil || len(got.Message.GetFunctions()) != 0 {
		t.Errorf("agreed capabilities = %v, want the empty list", got)
	}
}

// TestReconcileBusyReplicaVouchesForNothing checks that a busy replica,
// which may hang, does not keep a replica whose GetCapabilities fails out
// of the pool: with the busy one alone in it, every call would wait on it.
func TestReconcileBusyReplicaVouchesForNothing(t *testing.T) {
	t.Parallel()
	good, broken := startReconcilePlugin(t, "Echo"), startReconcilePlugin(t, "Echo")
	broken.broken.Store(true)
	e := newReconcileEngine(t, "", io.Discard, good, broken)
	probeAndReconcile(t, e, 0, 1)
	if got := replicaStates(e); fmt.Sprint(got) != "[healthy unverified]" {
		t.Fatalf("replica states = %v, want [healthy unverified]", got)
	}
	good0 := e.Replicas()[0]
	good0.mu.Lock()
	good0.busy = true // as a probe that timed out with calls open marks it
	good0.mu.Unlock()
	e.reconcile()
	if got := replicaStates(e); fmt.Sprint(got) != "[healthy healthy]" {
		t.Errorf("replica states beside a busy replica = %v, want [healthy healthy]", got)
	}
	if want := []string{e.Replicas()[1].Address}; !slices.Equal(e.eligible, want) {
		t.Errorf("pool beside a busy replica = %v, want %v", e.eligible, want)
	}
}

// replaceEngine builds the engine of cfg that a reload puts in place of
// old.
func replaceEngine(t *testing.T, old *Engine, cfg *config.Engine) *Engine {
	t.Helper()
	options := old.options
	options.Replaces = old
	e, err := NewEngine(cfg, options)
	if err != nil {
		t.Fatalf("NewEngine() = %v", err)
	}
	t.Cleanup(e.Close)
	return e
}

// TestReloadContinuesReplicas checks that an engine that a reload puts in
// place starts with the old engine's view of each replica, until that
// replica's first probe. A busy replica beside one that is down stays in
// the pool, where the down one does not enter it. A busy replica also
// keeps its vote, so that one with other functions cannot set the
// engine's list. Before, the new replicas started unknown: the pool held
// the down one alone, and the other functions won the vote.
func TestReloadContinuesReplicas(t *testing.T) {
	t.Parallel()
	markBusy := func(r *Replica) {
		r.mu.Lock()
		r.busy = true // as a probe that timed out with calls open marks it
		r.mu.Unlock()
	}

	t.Run("beside a replica that is down", func(t *testing.T) {
		t.Parallel()
		live, down := startReconcilePlugin(t, "Echo"), startReconcilePlugin(t, "Echo")
		down.unavailable.Store(true)
		old := newReconcileEngine(t, "", io.Discard, live, down)
		probeAndReconcile(t, old, 0, 1)
		markBusy(old.Replicas()[0])
		e := replaceEngine(t, old, old.Config)
		if want := []string{live.addr}; !slices.Equal(e.eligible, want) {
			t.Errorf("pool of the engine put in place = %v, want %v", e.eligible, want)
		}
	})

	t.Run("beside a replica with other functions", func(t *testing.T) {
		t.Parallel()
		good, other := startReconcilePlugin(t, "Echo", "Sum"), startReconcilePlugin(t, "Echo")
		old := newReconcileEngine(t, "", io.Discard, good, other)
		probeAndReconcile(t, old, 0, 1)
		if got := replicaStates(old); fmt.Sprint(got) != "[healthy disagreeing]" {
			t.Fatalf("old engine's replica states = %v, want [healthy disagreeing]", got)
		}
		markBusy(old.Replicas()[0])
		e := replaceEngine(t, old, old.Config)
		probeAndReconcile(t, e, 1) // the busy one's probe would time out
		if got := replicaStates(e); fmt.Sprint(got) != "[healthy disagreeing]" {
			t.Errorf("replica states of the engine put in place = %v, want [healthy disagreeing]", got)
		}
		if got := len(e.Capabilities().Message.GetFunctions()); got != 2 {
			t.Errorf("agreed functions = %d, want the busy replica's 2", got)
		}
	})

	t.Run("with other TLS settings", func(t *testing.T) {
		t.Parallel()
		live := startReconcilePlugin(t, "Echo")
		old := newReconcileEngine(t, "", io.Discard, live)
		probeAndReconcile(t, old, 0)
		old.Replicas()[0].inFlight.Add(1) // a call of the old engine still open
		set, err := tlsutil.WriteSet(t.TempDir(), []string{"localhost"}, tlsutil.SetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cfg := *old.Config
		cfg.Backends = []config.Backend{{Address: live.addr, TLS: &config.ClientTLS{Dir: set.QlikDir, ServerName: "other.example"}}}
		e := replaceEngine(t, old, &cfg)
		if got := e.Replicas()[0].Status().State; got != ReplicaUnknown {
			t.Errorf("state of a replica whose TLS settings changed = %s, want unknown until its probe", got)
		}
		if got := e.Replicas()[0].inFlight.Load(); got != 1 {
			t.Errorf("calls counted on it = %d, want the old engine's 1", got)
		}
	})
}

// TestReconcileAllowScriptDiffers checks that a replica whose functions are
// the engine's but whose allowScript is not is marked disagreeing with a
// last error and a warning that name allowScript. Before, both named
// differing function ids and listed none.
func TestReconcileAllowScriptDiffers(t *testing.T) {
	t.Parallel()
	agreed, scripted := startReconcilePlugin(t, "Echo", "Sum"), startReconcilePlugin(t, "Echo", "Sum")
	withScripts := proto.CloneOf(scripted.capabilities.Load())
	withScripts.AllowScript = true
	scripted.capabilities.Store(withScripts)
	log := &syncBuffer{}
	e := newReconcileEngine(t, "", log, agreed, scripted)
	probeAndReconcile(t, e, 0, 1)

	checkReconciled(t, e, "with one replica allowing scripts", agreed, ReplicaHealthy, ReplicaDisagreeing)
	if got, want := e.Replicas()[1].Status().LastError, "allowScript is true where the engine's is false"; got != want {
		t.Errorf("last error of the replica allowing scripts = %q, want %q", got, want)
	}
	if got := strings.Count(log.String(), `"msg":"replica gets no calls: its allowScript differs from the engine's`); got != 1 {
		t.Errorf("got %d warnings naming allowScript, want 1; log:\n%s", got, log)
	}
	if strings.Contains(log.String(), "function_ids") {
		t.Errorf("log names differing function ids where only allowScript differs; log:\n%s", log)
	}

	// Other functions too: the last error names both.
	scripted.offer("Echo")
	withScripts = proto.CloneOf(scripted.capabilities.Load())
	withScripts.AllowScript = true
	scripted.capabilities.Store(withScripts)
	probeAndReconcile(t, e, 1)
	if got, want := e.Replicas()[1].Status().LastError, "functions differ from the engine's at ids [1] and allowScript is true where the engine's is false"; got != want {
		t.Errorf("last error of the replica with other functions and scripts = %q, want %q", got, want)
	}
}
