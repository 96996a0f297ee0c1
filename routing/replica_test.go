package routing

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/ssepb"
)

// holdHeader makes a workerPlugin hold an ExecuteFunction call until its
// release channel is closed.
const holdHeader = "x-hold"

// workerPlugin serves every call, GetCapabilities included, on one of a
// fixed number of workers, as a grpcio (Python) plugin does with its thread
// pool: a call that finds every worker busy waits for one.
type workerPlugin struct {
	ssepb.UnimplementedConnectorServer
	addr    string
	workers chan struct{} // one value per busy worker
	arrived chan string   // the x-sse-call header of each ExecuteFunction call as it arrives
	holding chan struct{} // one value per held call that has a worker
	release chan struct{}
}

// work runs f on a worker, or returns ctx's error if none is free before
// ctx ends.
func (p *workerPlugin) work(ctx context.Context, f func() error) error {
	select {
	case p.workers <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-p.workers }()
	return f()
}

func (p *workerPlugin) GetCapabilities(ctx context.Context, _ *ssepb.Empty) (*ssepb.Capabilities, error) {
	capabilities := &ssepb.Capabilities{PluginIdentifier: "worker plugin",
		Functions: []*ssepb.FunctionDefinition{{FunctionId: 0, Name: "Echo"}}}
	return capabilities, p.work(ctx, func() error { return nil })
}

func (p *workerPlugin) ExecuteFunction(stream grpc.BidiStreamingServer[ssepb.BundledRows, ssepb.BundledRows]) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	p.arrived <- strings.Join(md.Get("x-sse-call"), "")
	return p.work(stream.Context(), func() error {
		if len(md.Get(holdHeader)) > 0 {
			p.holding <- struct{}{}
			select {
			case <-p.release:
			case <-stream.Context().Done():
				return stream.Context().Err()
			}
		}
		for {
			if _, err := stream.Recv(); errors.Is(err, io.EOF) {
				return nil
			} else if err != nil {
				return err
			}
		}
	})
}

// startWorkerPlugin serves a workerPlugin with the given number of
// workers on a free loopback port until the test ends.
func startWorkerPlugin(t *testing.T, workers int) *workerPlugin {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &workerPlugin{addr: lis.Addr().String(), workers: make(chan struct{}, workers),
		arrived: make(chan string, 100), holding: make(chan struct{}, 100), release: make(chan struct{})}
	server := grpc.NewServer()
	ssepb.RegisterConnectorServer(server, p)
	go server.Serve(lis)
	t.Cleanup(server.Stop)
	return p
}

// newWorkerEngine builds engine R over plugins with the given balancer and
// max_in_flight, without starting its probes.
func newWorkerEngine(t *testing.T, log *syncBuffer, balancerName string, maxInFlight int, plugins ...*workerPlugin) *Engine {
	t.Helper()
	var backends []config.Backend
	for _, plugin := range plugins {
		backends = append(backends, config.Backend{Address: plugin.addr})
	}
	cfg := &config.Engine{
		Name:          "R",
		ProbeInterval: time.Minute,
		ProbeTimeout:  5 * time.Second,
		Balancer:      balancerName,
		MaxInFlight:   maxInFlight,
		MaxWaiting:    config.DefaultMaxWaiting,
		ReplayBuffer:  config.DefaultReplayBuffer,
		MaxAttempts:   config.DefaultMaxAttempts,
		Backends:      backends,
	}
	e, err := NewEngine(cfg, EngineOptions{
		PoolOptions: PoolOptions{
			Limits:    config.Limits{MaxMessageSize: config.DefaultMaxMessageSize, MaxHeaderListSize: config.DefaultMaxHeaderListSize},
			Keepalive: config.Keepalive{BackendPingInterval: config.DefaultBackendPingInterval},
		},
		Logger: slog.New(slog.NewJSONHandler(log, nil)),
	})
	if err != nil {
		t.Fatalf("NewEngine() = %v", err)
	}
	t.Cleanup(e.Close)
	return e
}

// startPoolCall starts an ExecuteFunction call named name through the
// engine's pool, held on the plugin if hold is set, and returns a channel
// that receives its outcome.
func startPoolCall(ctx context.Context, e *Engine, name string, hold bool) <-chan error {
	result := make(chan error, 1)
	go func() {
		ctx := metadata.AppendToOutgoingContext(ctx, "x-sse-call", name)
		if hold {
			ctx = metadata.AppendToOutgoingContext(ctx, holdHeader, "1")
		}
		stream, err := ssepb.NewConnectorClient(e.Pool.Conn()).ExecuteFunction(ctx, grpc.WaitForReady(true))
		if err != nil {
			result <- err
			return
		}
		if err := stream.CloseSend(); err != nil {
			result <- err
			return
		}
		if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
			result <- fmt.Errorf("call %s: %w", name, err)
			return
		}
		result <- nil
	}()
	return result
}

// waitArrived waits until the call named name reaches the plugin.
func waitArrived(t *testing.T, p *workerPlugin, name string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case got := <-p.arrived:
			if got == name {
				return
			}
		case <-deadline:
			t.Fatalf("call %s did not reach the plugin within %v", name, timeout)
		}
	}
}

// waitResult waits for a call's outcome and fails the test unless it is OK.
func waitResult(t *testing.T, result <-chan error, what string) {
	t.Helper()
	select {
	case err := <-result:
		if err != nil {
			t.Errorf("%s = %v, want OK", what, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not end within 10s", what)
	}
}

// TestReplicaCountsCallsInFlight checks that each balancer, with and
// without max_in_flight, counts the calls open on a replica from its pick
// to its end.
func TestReplicaCountsCallsInFlight(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		balancer    string
		maxInFlight int
	}{
		{name: "least_request", balancer: config.BalancerLeastRequest},
		{name: "round_robin", balancer: config.BalancerRoundRobin},
		{name: "least_request with max_in_flight", balancer: config.BalancerLeastRequest, maxInFlight: 5},
		{name: "round_robin with max_in_flight", balancer: config.BalancerRoundRobin, maxInFlight: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			plugin := startWorkerPlugin(t, 10)
			e := newWorkerEngine(t, &syncBuffer{}, tt.balancer, tt.maxInFlight, plugin)
			replica := e.Replicas()[0]
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()

			var results []<-chan error
			for i := range 3 {
				results = append(results, startPoolCall(ctx, e, fmt.Sprint("held", i), true))
			}
			for range 3 {
				select {
				case <-plugin.holding:
				case <-ctx.Done():
					t.Fatal("3 calls not held on the plugin within 20s")
				}
			}
			if got := replica.inFlight.Load(); got != 3 {
				t.Errorf("calls in flight counted with 3 held = %d, want 3", got)
			}
			close(plugin.release)
			for i, result := range results {
				waitResult(t, result, fmt.Sprint("held call ", i))
			}
			if got := replica.inFlight.Load(); got != 0 {
				t.Errorf("calls in flight counted after every call ended = %d, want 0", got)
			}
		})
	}
}

// TestProbeTimeoutWhileBusy follows a plugin with two workers, both busy
// with long calls from the gateway, so that its probe times out. The
// replica is busy, not failing: it keeps getting calls, which the plugin
// queues until a worker is free, and its last error says so. Before, the
// replica was marked failing and a new call waited for another replica
// until reconnect_buffer ran out. A probe that times out with no call in
// flight still marks the replica failing.
func TestProbeTimeoutWhileBusy(t *testing.T) {
	t.Parallel()
	plugin := startWorkerPlugin(t, 2)
	log := &syncBuffer{}
	e := newWorkerEngine(t, log, config.BalancerLeastRequest, 0, plugin)
	replica := e.Replicas()[0]
	probeAndReconcile(t, e, 0)
	if got := replica.Status().State; got != ReplicaHealthy {
		t.Fatalf("state after the first probe = %s, want healthy", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Two long calls take both workers.
	long := []<-chan error{startPoolCall(ctx, e, "long0", true), startPoolCall(ctx, e, "long1", true)}
	for range long {
		select {
		case <-plugin.holding:
		case <-ctx.Done():
			t.Fatal("2 calls not held on the plugin within 30s")
		}
	}

	// Its probes time out, twice.
	for range 2 {
		if got := replica.probe(context.Background(), 200*time.Millisecond); got != nil {
			t.Fatalf("probe() with every worker busy = %v, want nil", got.Message)
		}
		e.reconcile()
	}
	status := replica.Status()
	if status.State != ReplicaHealthy {
		t.Errorf("state after probes timed out with 2 calls in flight = %s, want healthy", status.State)
	}
	if !strings.Contains(status.LastError, "busy") || !strings.Contains(status.LastError, "2 calls") {
		t.Errorf("last error after probes timed out with 2 calls in flight = %q, want it to say busy with 2 calls", status.LastError)
	}
	if got := strings.Count(log.String(), `"msg":"replica busy:`); got != 1 {
		t.Errorf("got %d busy records after two probes timed out, want 1; log:\n%s", got, log)
	}
	if !status.Busy {
		t.Error("status after probes timed out with 2 calls in flight is not busy")
	}

	// A short call goes to the plugin, which queues it until a worker is
	// free.
	short := startPoolCall(ctx, e, "short", false)
	waitArrived(t, plugin, "short", 5*time.Second)
	close(plugin.release)
	for i, result := range long {
		waitResult(t, result, fmt.Sprint("long call ", i))
	}
	waitResult(t, short, "short call")

	// Its next probe answers, the last error goes, and the log says so.
	probeAndReconcile(t, e, 0)
	if status := replica.Status(); status.State != ReplicaHealthy || status.LastError != "" || status.Busy {
		t.Errorf("state, last error and busy after a probe answered = %s, %q, %v, want healthy, none and false", status.State, status.LastError, status.Busy)
	}
	if got := strings.Count(log.String(), `"msg":"replica no longer busy`); got != 1 {
		t.Errorf("got %d records of the end of busy after a probe answered, want 1; log:\n%s", got, log)
	}

	// A probe that times out with no call in flight marks it failing, also
	// when it was busy: its calls ended, but it does not answer. That is no
	// end of busy to log.
	replica.mu.Lock()
	replica.busy = true
	replica.mu.Unlock()
	before := len(log.String())
	plugin.workers <- struct{}{}
	plugin.workers <- struct{}{}
	replica.probe(context.Background(), 200*time.Millisecond)
	if got := replica.Status().State; got != ReplicaFailing {
		t.Errorf("state after a probe timed out with no call in flight = %s, want failing", got)
	}
	if later := log.String()[before:]; strings.Contains(later, "no longer busy") || !strings.Contains(later, `"msg":"replica failing"`) {
		t.Errorf("log after a busy replica's probe timed out with no call in flight:\n%s\nwant it failing, not no longer busy", later)
	}
	<-plugin.workers
	<-plugin.workers
}

// TestBusyReplicaBesideFitOne checks that a busy replica, whose probes time
// out while calls are open on it, gets no new calls while another replica
// can take them: it may as well hang. Before, a hung replica beside a
// working one kept half of the new calls, each of which hung with it.
func TestBusyReplicaBesideFitOne(t *testing.T) {
	t.Parallel()
	busy, fit := startWorkerPlugin(t, 1), startWorkerPlugin(t, 4)
	e := newWorkerEngine(t, &syncBuffer{}, config.BalancerRoundRobin, 0, busy, fit)
	probeAndReconcile(t, e, 0, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Round robin spreads calls over the replicas that are ready, which
	// may be one at first: quick calls go out until one reaches the first
	// replica, whose connection is then ready too. Held calls sent before
	// that could all go to the other replica and take its workers, which
	// the new calls below need.
	for i := 0; ; i++ {
		if ctx.Err() != nil {
			t.Fatal("no call reached the first replica within 30s")
		}
		name := fmt.Sprint("warm", i)
		waitResult(t, startPoolCall(ctx, e, name, false), name)
		if len(busy.arrived) > 0 {
			break
		}
	}
	drain := func(p *workerPlugin) {
		for len(p.arrived) > 0 {
			<-p.arrived
		}
	}
	drain(busy)
	drain(fit)

	// A call held on the busy replica takes its one worker. Held calls go
	// out one by one until one is held there: at most one lands on the
	// other replica first.
	var held []<-chan error
	for onBusy := false; !onBusy; {
		if len(held) == 3 {
			t.Fatal("3 held calls, none on the first replica")
		}
		held = append(held, startPoolCall(ctx, e, fmt.Sprint("held", len(held)), true))
		select {
		case <-busy.holding:
			onBusy = true
		case <-fit.holding:
		case <-ctx.Done():
			t.Fatal("call not held on a plugin within 30s")
		}
	}
	if got := e.Replicas()[0].probe(context.Background(), 200*time.Millisecond); got != nil {
		t.Fatalf("probe() of the replica with its worker busy = %v, want nil", got.Message)
	}
	e.reconcile()
	if !e.Replicas()[0].isBusy() {
		t.Fatal("the replica whose probe timed out with a call open is not busy")
	}

	// New calls all go to the other replica.
	for i := range 4 {
		name := fmt.Sprint("new", i)
		result := startPoolCall(ctx, e, name, false)
		waitArrived(t, fit, name, 5*time.Second)
		waitResult(t, result, name)
	}
	for len(busy.arrived) > 0 {
		if got := <-busy.arrived; strings.HasPrefix(got, "new") {
			t.Errorf("call %s reached the busy replica, want only the other", got)
		}
	}
	close(busy.release)
	close(fit.release)
	for i, result := range held {
		waitResult(t, result, fmt.Sprint("held call ", i))
	}
}

// TestReplacingEngine checks what an engine that a reload puts in place of
// another takes over from it: the counts of the calls open on replicas at
// the same address, so that a busy replica's probe still sees the calls
// the old engine serves, the busy mark, so that a replica that may hang
// gets no new calls beside others, and the capabilities only when the
// backends are the same. Before, the counts started at 0, and a busy replica was marked
// failing after every reload; and an engine pointed at another plugin
// answered Qlik with the old plugin's functions.
func TestReplacingEngine(t *testing.T) {
	t.Parallel()
	plugin, other := startWorkerPlugin(t, 1), startWorkerPlugin(t, 1)
	old := newWorkerEngine(t, &syncBuffer{}, config.BalancerLeastRequest, 0, plugin)
	probeAndReconcile(t, old, 0)
	if old.Capabilities() == nil {
		t.Fatal("no capabilities after the first probe")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	held := startPoolCall(ctx, old, "held", true)
	select {
	case <-plugin.holding:
	case <-ctx.Done():
		t.Fatal("call not held on the plugin within 30s")
	}
	old.Replicas()[0].probe(context.Background(), 200*time.Millisecond)
	if !old.Replicas()[0].isBusy() {
		t.Fatal("the replica whose probe timed out with a call open is not busy")
	}

	replace := func(backends ...*workerPlugin) *Engine {
		t.Helper()
		cfg := *old.Config
		cfg.MaxInFlight = 5
		cfg.Backends = nil
		for _, backend := range backends {
			cfg.Backends = append(cfg.Backends, config.Backend{Address: backend.addr})
		}
		return replaceEngine(t, old, &cfg)
	}

	same := replace(plugin)
	if got := same.Replicas()[0].inFlight.Load(); got != 1 {
		t.Errorf("calls counted on the replica of the engine put in place = %d, want the old engine's 1", got)
	}
	if !same.Replicas()[0].isBusy() {
		t.Error("the replica of the engine put in place is not busy, want it busy as the old engine's was")
	}
	if same.Capabilities() == nil {
		t.Error("engine with the same backends: capabilities = nil, want the old engine's")
	}
	if len(same.predecessors) != 0 {
		t.Errorf("predecessors left after the replicas were made = %d, want 0: a later replica at the address is another one", len(same.predecessors))
	}
	both := replace(plugin, other)
	if want := []string{other.addr}; !slices.Equal(both.eligible, want) {
		t.Errorf("pool of an engine put in place beside a fit replica = %v, want %v without the busy one", both.eligible, want)
	}
	moved := replace(other)
	if got := moved.Replicas()[0].inFlight.Load(); got != 0 {
		t.Errorf("calls counted on a replica at another address = %d, want 0", got)
	}
	if got := moved.Capabilities(); got != nil {
		t.Errorf("engine with other backends: capabilities = %v, want none until its replica answers", got.Message)
	}
	renamed := *old.Config
	renamed.Backends = []config.Backend{{Address: plugin.addr, TLS: &config.ClientTLS{ServerName: "other.example"}}}
	if sameBackends(old.Config.Backends, renamed.Backends) {
		t.Error("sameBackends() = true for another TLS server name at the same address, want false")
	}

	close(plugin.release)
	waitResult(t, held, "held call")
	if got := same.Replicas()[0].inFlight.Load(); got != 0 {
		t.Errorf("calls counted once the old engine's call ended = %d, want 0", got)
	}
}
