package routing_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/routing"
	"github.com/ssegw/ssegw/ssepb"
)

// cappedPlugin is a plugin on loopback that counts the ExecuteFunction
// calls open on it at once. A call holds until hold has passed, or, with
// a nil hold, until release is closed.
type cappedPlugin struct {
	ssepb.UnimplementedConnectorServer
	addr    string
	hold    time.Duration
	release chan struct{}
	arrived chan struct{} // receives one value per call that arrives

	open, peak, served atomic.Int64
}

func (p *cappedPlugin) ExecuteFunction(stream grpc.BidiStreamingServer[ssepb.BundledRows, ssepb.BundledRows]) error {
	open := p.open.Add(1)
	defer p.open.Add(-1)
	for {
		peak := p.peak.Load()
		if open <= peak || p.peak.CompareAndSwap(peak, open) {
			break
		}
	}
	select {
	case p.arrived <- struct{}{}:
	default:
	}
	wait := p.release
	if p.hold > 0 {
		timer := time.NewTimer(p.hold)
		defer timer.Stop()
		wait = make(chan struct{})
		go func() {
			select {
			case <-timer.C:
				close(wait)
			case <-stream.Context().Done():
			}
		}()
	}
	select {
	case <-wait:
	case <-stream.Context().Done():
		return stream.Context().Err()
	}
	for {
		if _, err := stream.Recv(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return err
		}
	}
	p.served.Add(1)
	return nil
}

// startCappedPlugin serves a cappedPlugin whose calls hold for hold, or
// until released for a zero hold, on a free loopback port.
func startCappedPlugin(t *testing.T, hold time.Duration) *cappedPlugin {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cappedPlugin{addr: lis.Addr().String(), hold: hold, release: make(chan struct{}), arrived: make(chan struct{}, 1000)}
	server := grpc.NewServer()
	ssepb.RegisterConnectorServer(server, p)
	go server.Serve(lis)
	t.Cleanup(server.Stop)
	return p
}

// delayedPicks is a client stats handler that counts the calls whose pick
// had to wait for a new picker, among those whose context carries
// markedCall.
type delayedPicks struct {
	count atomic.Int64
}

type markedCall struct{}

func (d *delayedPicks) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (d *delayedPicks) HandleRPC(ctx context.Context, s stats.RPCStats) {
	if _, ok := s.(*stats.DelayedPickComplete); ok && ctx.Value(markedCall{}) != nil {
		d.count.Add(1)
	}
}
func (d *delayedPicks) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (d *delayedPicks) HandleConn(context.Context, stats.ConnStats)                       {}

// newCappedEngine builds engine R over plugins with least_request and
// max_in_flight limit, without probes, and returns a client of its pool.
// handler, if not nil, watches the pool's calls.
func newCappedEngine(t *testing.T, limit int, handler stats.Handler, plugins ...*cappedPlugin) ssepb.ConnectorClient {
	t.Helper()
	return newBalancedCappedEngine(t, config.BalancerLeastRequest, limit, handler, plugins...)
}

// newBalancedCappedEngine is newCappedEngine with the balancer named
// balancerName.
func newBalancedCappedEngine(t *testing.T, balancerName string, limit int, handler stats.Handler, plugins ...*cappedPlugin) ssepb.ConnectorClient {
	t.Helper()
	cfg := &config.Engine{
		Name:          "R",
		ProbeInterval: time.Minute,
		ProbeTimeout:  5 * time.Second,
		Balancer:      balancerName,
		MaxInFlight:   limit,
		MaxWaiting:    config.DefaultMaxWaiting,
		ReplayBuffer:  config.DefaultReplayBuffer,
		MaxAttempts:   config.DefaultMaxAttempts,
	}
	for _, plugin := range plugins {
		cfg.Backends = append(cfg.Backends, config.Backend{Address: plugin.addr})
	}
	options := routing.PoolOptions{
		Limits:    config.Limits{MaxMessageSize: config.DefaultMaxMessageSize, MaxHeaderListSize: config.DefaultMaxHeaderListSize},
		Keepalive: config.Keepalive{BackendPingInterval: config.DefaultBackendPingInterval},
	}
	if handler != nil {
		options.DialOptions = []grpc.DialOption{grpc.WithStatsHandler(handler)}
	}
	e, err := routing.NewEngine(cfg, routing.EngineOptions{PoolOptions: options, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("NewEngine() = %v", err)
	}
	t.Cleanup(e.Close)
	return ssepb.NewConnectorClient(e.Pool.Conn())
}

// cappedCall makes one ExecuteFunction call through the pool and returns
// its error, nil for OK. The call waits for ready, as the gateway's calls
// do unless reconnect_buffer is 0.
func cappedCall(ctx context.Context, client ssepb.ConnectorClient, options ...grpc.CallOption) error {
	stream, err := client.ExecuteFunction(ctx, append([]grpc.CallOption{grpc.WaitForReady(true)}, options...)...)
	if err != nil {
		return err
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// TestCappedNeverExceedsLimit checks, with concurrent calls that each hold
// 10ms on real plugins, that no plugin ever has more calls open than
// max_in_flight, that the limit is reached, and that every call beyond it
// waits and succeeds.
func TestCappedNeverExceedsLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		limit   int
		plugins int
		calls   int
	}{
		{name: "one per plugin, two plugins", limit: 1, plugins: 2, calls: 20},
		{name: "two per plugin, two plugins", limit: 2, plugins: 2, calls: 40},
		{name: "three per plugin, one plugin", limit: 3, plugins: 1, calls: 30},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var plugins []*cappedPlugin
			for range tt.plugins {
				plugins = append(plugins, startCappedPlugin(t, 10*time.Millisecond))
			}
			client := newCappedEngine(t, tt.limit, nil, plugins...)

			errs := make([]error, tt.calls)
			var wg sync.WaitGroup
			for i := range tt.calls {
				wg.Go(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					errs[i] = cappedCall(ctx, client)
				})
			}
			wg.Wait()

			for i, err := range errs {
				if err != nil {
					t.Errorf("call %d = %v, want OK", i, err)
				}
			}
			var served, highest int64
			for i, plugin := range plugins {
				if peak := plugin.peak.Load(); peak > int64(tt.limit) {
					t.Errorf("plugin %d had %d calls open at once, want at most %d", i, peak, tt.limit)
				}
				highest = max(highest, plugin.peak.Load())
				served += plugin.served.Load()
			}
			if highest != int64(tt.limit) {
				t.Errorf("most calls open at once on a plugin = %d, want the limit %d reached", highest, tt.limit)
			}
			if served != int64(tt.calls) {
				t.Errorf("plugins served %d calls, want %d", served, tt.calls)
			}
		})
	}
}

// TestCappedWaitingPickResumes holds a call on the one plugin of an engine
// with max_in_flight 1. A second call must wait in the balancer, and a
// call with a 200ms deadline meanwhile ends with DeadlineExceeded without
// reaching the plugin. Once the first call ends, the waiting call reaches
// the plugin and succeeds.
func TestCappedWaitingPickResumes(t *testing.T) {
	t.Parallel()
	plugin := startCappedPlugin(t, 0)
	picks := &delayedPicks{}
	client := newCappedEngine(t, 1, picks, plugin)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The first call holds the plugin's only place.
	first := make(chan error, 1)
	go func() { first <- cappedCall(ctx, client) }()
	select {
	case <-plugin.arrived:
	case <-ctx.Done():
		t.Fatal("the first call did not reach the plugin")
	}

	// The second call waits for the place.
	second := make(chan error, 1)
	go func() { second <- cappedCall(context.WithValue(ctx, markedCall{}, true), client) }()

	// A call with a short deadline waits too, and times out.
	shortCtx, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancelShort()
	if err := cappedCall(shortCtx, client); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("call with a 200ms deadline while the plugin is full = %v, want DeadlineExceeded", err)
	}
	if got := plugin.open.Load(); got != 1 {
		t.Errorf("calls open on the plugin while it is full = %d, want 1", got)
	}

	// Ending the first call lets the second one through.
	close(plugin.release)
	for name, result := range map[string]chan error{"first": first, "second": second} {
		select {
		case err := <-result:
			if err != nil {
				t.Errorf("%s call = %v, want OK", name, err)
			}
		case <-ctx.Done():
			t.Fatalf("%s call did not end within 30s", name)
		}
	}
	if got := plugin.peak.Load(); got != 1 {
		t.Errorf("most calls open at once on the plugin = %d, want 1", got)
	}
	if got := plugin.served.Load(); got != 2 {
		t.Errorf("plugin served %d calls, want 2", got)
	}
	if got := picks.count.Load(); got != 1 {
		t.Errorf("delayed picks of the second call = %d, want 1: it did not wait in the balancer", got)
	}
}

// TestCappedFullFailsFast checks the calls of an engine with
// reconnect_buffer: 0, which do not wait for ready: one that finds every
// replica at max_in_flight fails at once with Unavailable, rather than
// waiting for a call to end.
func TestCappedFullFailsFast(t *testing.T) {
	t.Parallel()
	plugin := startCappedPlugin(t, 0)
	client := newCappedEngine(t, 1, nil, plugin)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The first call holds the plugin's only place. Not waiting for ready,
	// it still waits while the connection is being made.
	first := make(chan error, 1)
	go func() { first <- cappedCall(ctx, client, grpc.WaitForReady(false)) }()
	select {
	case <-plugin.arrived:
	case <-ctx.Done():
		t.Fatal("the first call did not reach the plugin")
	}

	err := cappedCall(ctx, client, grpc.WaitForReady(false))
	if st := status.Convert(err); st.Code() != codes.Unavailable || st.Message() != routing.ErrEveryReplicaFull.Error() {
		t.Errorf("call while the only replica is full = %v, want Unavailable: %v", err, routing.ErrEveryReplicaFull)
	}
	close(plugin.release)
	if err := <-first; err != nil {
		t.Errorf("first call = %v, want OK", err)
	}
	if got := plugin.served.Load(); got != 1 {
		t.Errorf("plugin served %d calls, want 1", got)
	}
}

// TestCappedManyWaitingCalls checks that with max_in_flight 1 and one
// plugin, 8 clients making 40 short calls each all get through: a call
// that ends must wake the calls waiting for the place, or one of them
// waits until its 10s deadline.
func TestCappedManyWaitingCalls(t *testing.T) {
	t.Parallel()
	const clients, callsEach = 8, 40
	plugin := startCappedPlugin(t, time.Millisecond)
	client := newCappedEngine(t, 1, nil, plugin)

	var failures atomic.Int64
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for range callsEach {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := cappedCall(ctx, client)
				cancel()
				if err != nil {
					if failures.Add(1) == 1 {
						t.Errorf("call = %v, want OK", err)
					}
				}
			}
		})
	}
	wg.Wait()

	if n := failures.Load(); n > 0 {
		t.Errorf("%d of %d calls failed, want none", n, clients*callsEach)
	}
	if got := plugin.peak.Load(); got != 1 {
		t.Errorf("most calls open at once on the plugin = %d, want 1", got)
	}
	if got := plugin.served.Load(); got != clients*callsEach {
		t.Errorf("plugin served %d calls, want %d", got, clients*callsEach)
	}
}

// TestCappedFindsFreeReplica fills all replicas but one to max_in_flight
// 1, with more replicas than the child balancer is asked for in one pick.
// Each further call must go to the free replica at once: a pick that
// waits for a call to end would wait here until its deadline, since the
// calls open elsewhere do not end.
func TestCappedFindsFreeReplica(t *testing.T) {
	t.Parallel()
	tests := []struct {
		balancer string
		plugins  int
	}{
		{balancer: config.BalancerRoundRobin, plugins: 12},
		{balancer: config.BalancerLeastRequest, plugins: 40},
	}
	for _, tt := range tests {
		t.Run(tt.balancer, func(t *testing.T) {
			t.Parallel()
			var plugins []*cappedPlugin
			for range tt.plugins {
				plugins = append(plugins, startCappedPlugin(t, 0))
			}
			picks := &delayedPicks{}
			client := newBalancedCappedEngine(t, tt.balancer, 1, picks, plugins...)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			// One held call per plugin fills them all, once every
			// subconnection is ready.
			heldErrors := make(chan error, tt.plugins)
			for range tt.plugins {
				go func() { heldErrors <- cappedCall(ctx, client) }()
			}
			// Poll the sum of open calls: which plugin takes which call
			// is the balancer's choice, so no one plugin's arrived
			// channel signals that all calls are in.
			deadline := time.Now().Add(10 * time.Second)
			for {
				var open int64
				for _, plugin := range plugins {
					open += plugin.open.Load()
				}
				if open == int64(tt.plugins) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d of %d held calls reached a plugin within 10s, want all: each plugin has room for one", open, tt.plugins)
				}
				time.Sleep(10 * time.Millisecond)
			}

			// The first plugin's call ends, and that plugin holds no more.
			free := plugins[0]
			close(free.release)
			if err := <-heldErrors; err != nil {
				t.Fatalf("held call released on the first plugin = %v, want OK", err)
			}

			const calls = 20
			for i := range calls {
				callCtx, cancelCall := context.WithTimeout(context.WithValue(ctx, markedCall{}, true), 5*time.Second)
				err := cappedCall(callCtx, client)
				cancelCall()
				if err != nil {
					t.Fatalf("call %d with one plugin of %d free = %v, want OK at once", i, tt.plugins, err)
				}
			}
			if got := picks.count.Load(); got != 0 {
				t.Errorf("%d of %d calls waited for a new picker while a plugin was free, want none", got, calls)
			}
			if got := free.served.Load(); got != calls+1 {
				t.Errorf("free plugin served %d calls, want %d: the held one and every later one", got, calls+1)
			}
			for i, plugin := range plugins {
				if peak := plugin.peak.Load(); peak != 1 {
					t.Errorf("plugin %d had %d calls open at once, want 1", i, peak)
				}
			}
		})
	}
}

var _ stats.Handler = (*delayedPicks)(nil)
