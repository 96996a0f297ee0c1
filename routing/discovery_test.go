package routing

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/ssepb"
)

// startCapabilitiesServer serves a plugin whose GetCapabilities names it.
func startCapabilitiesServer(t *testing.T, identifier string) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := grpc.NewServer()
	ssepb.RegisterConnectorServer(server, &capabilitiesServer{identifier: identifier})
	go server.Serve(lis)
	t.Cleanup(server.Stop)
	return lis.Addr().String()
}

type capabilitiesServer struct {
	ssepb.UnimplementedConnectorServer
	identifier string
}

func (s *capabilitiesServer) GetCapabilities(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
	return &ssepb.Capabilities{PluginIdentifier: s.identifier}, nil
}

// newDNSEngine returns an engine with one backend marked dns, at address,
// whose discovery the test drives through setDiscovered.
func newDNSEngine(t *testing.T, address string) *Engine {
	t.Helper()
	cfg := &config.Config{
		Listeners: []config.Listener{{Address: "127.0.0.1:0", Insecure: true}},
		Engines:   map[string]*config.Engine{"R": {Backends: []config.Backend{{Address: address, DNS: true}}}},
	}
	cfg.ApplyDefaults()
	engineConfig := cfg.Engine("R")
	engineConfig.DNSInterval = time.Hour // the test drives discovery itself
	engine, err := NewEngine(engineConfig, EngineOptions{
		PoolOptions: PoolOptions{Limits: cfg.Limits, Keepalive: cfg.Keepalive},
		Logger:      slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(engine.Close)
	return engine
}

// probeContext returns the context for the probes that setDiscovered
// starts, in place of the one Start makes. Unlike Start it resolves no
// name, so the test makes no DNS query. The probes end before the engine
// closes.
func probeContext(t *testing.T, engine *Engine) context.Context {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		engine.probesDone.Wait()
	})
	return ctx
}

// waitForReplicas polls until the engine's healthy replicas are want.
func waitForReplicas(t *testing.T, engine *Engine, want []string) {
	t.Helper()
	// The engine logs to slog.DiscardHandler in these tests, so poll
	// the replicas' states.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var healthy []string
		for _, replica := range engine.Replicas() {
			if replica.Status().State == ReplicaHealthy {
				healthy = append(healthy, replica.Address)
			}
		}
		slices.Sort(healthy)
		if slices.Equal(healthy, want) && len(engine.Replicas()) == len(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("healthy replicas = %v of %d, want %v", healthy, len(engine.Replicas()), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDNSDiscovery checks that the addresses a DNS backend resolves to
// become replicas, are probed, and leave when they vanish from DNS.
func TestDNSDiscovery(t *testing.T) {
	first := startCapabilitiesServer(t, "first")
	second := startCapabilitiesServer(t, "second")
	engine := newDNSEngine(t, "plugins.test:50055")
	ctx := probeContext(t, engine)

	if got := engine.Replicas(); len(got) != 0 {
		t.Fatalf("replicas before discovery = %d, want 0", len(got))
	}
	both := []string{first, second}
	slices.Sort(both)
	engine.setDiscovered(ctx, 0, []string{second, first})
	waitForReplicas(t, engine, both)

	engine.setDiscovered(ctx, 0, []string{first})
	waitForReplicas(t, engine, []string{first})
	engine.mu.Lock()
	eligible := slices.Clone(engine.eligible)
	engine.mu.Unlock()
	if !slices.Equal(eligible, []string{first}) {
		t.Errorf("pool uses %v, want [%s]", eligible, first)
	}
}

// TestDNSDiscoveryResolves checks that a DNS backend whose host is
// localhost gets the loopback address as a replica.
func TestDNSDiscoveryResolves(t *testing.T) {
	plugin := startCapabilitiesServer(t, "local")
	_, port, err := net.SplitHostPort(plugin)
	if err != nil {
		t.Fatal(err)
	}
	engine := newDNSEngine(t, net.JoinHostPort("localhost", port))
	engine.Start()

	// The engine logs to slog.DiscardHandler here, so poll the replicas.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if slices.ContainsFunc(engine.Replicas(), func(r *Replica) bool {
			return r.Address == plugin && r.Status().State == ReplicaHealthy
		}) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no healthy replica at %s after resolving localhost; replicas: %v", plugin, addressesOf(engine.Replicas()))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDNSReplicaWaitsForProbe checks that a replica that DNS adds gets no
// calls until its first probe has shown that its functions are the
// engine's, also when another replica's probe reconciles meanwhile.
func TestDNSReplicaWaitsForProbe(t *testing.T) {
	first := startCapabilitiesServer(t, "first")
	added := startBlockingPlugin(t) // no functions, as the first
	engine := newDNSEngine(t, "plugins.test:50055")
	ctx := probeContext(t, engine)
	engine.setDiscovered(ctx, 0, []string{first})
	waitForReplicas(t, engine, []string{first})

	engine.setDiscovered(ctx, 0, []string{first, added.addr})
	select {
	case <-added.arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("the added replica's first probe did not reach it within 5s")
	}
	engine.reconcile() // as the first replica's next probe does
	if got := eligibleAddresses(engine); !slices.Equal(got, []string{first}) {
		t.Errorf("pool uses %v while the added replica's first probe is under way, want [%s]", got, first)
	}

	close(added.release)
	want := []string{first, added.addr}
	slices.Sort(want)
	// The engine logs no record when the pool's replicas change, so poll.
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := eligibleAddresses(engine)
		slices.Sort(got)
		if slices.Equal(got, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool uses %v 10s after the added replica's probe could end, want %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDNSReplicaBusyStillWaitsForProbe checks that a DNS replica that no
// probe has checked is not fit for calls, also when it is busy with calls
// of the engine a reload replaced. Such a replica continues the old
// engine's probe results only with the same backend settings, and then is
// not unknown; with other settings, its calls are all it shares.
func TestDNSReplicaBusyStillWaitsForProbe(t *testing.T) {
	engine := newDNSEngine(t, "plugins.test:50055")
	replica := &Replica{Address: "127.0.0.1:50055", backend: 0, state: ReplicaUnknown, busy: true, inFlight: new(atomic.Int32)}
	if engine.fitForCalls(replica) {
		t.Error("fitForCalls() = true for a busy DNS replica that no probe has checked, want false")
	}
}

// A DNS answer with repeats and more addresses than the bound makes each
// address one replica, up to the bound, the same ones for any order of
// the answer.
func TestBoundReplicas(t *testing.T) {
	var answer []string
	for i := range 2 * maxDiscoveredReplicas {
		answer = append(answer, net.JoinHostPort(fmt.Sprintf("10.0.%d.%d", i/256, i%256), "50055"))
	}
	answer = append(answer, answer[0], answer[1])
	kept := BoundReplicas(slices.Clone(answer))
	if len(kept) != maxDiscoveredReplicas {
		t.Fatalf("kept %d replicas of %d addresses, want %d", len(kept), len(answer), maxDiscoveredReplicas)
	}
	if !slices.IsSorted(kept) || len(slices.Compact(slices.Clone(kept))) != len(kept) {
		t.Fatalf("kept replicas are not sorted without repeats: %v", kept)
	}
	slices.Reverse(answer)
	if again := BoundReplicas(answer); !slices.Equal(again, kept) {
		t.Fatalf("the same answer in another order kept %v, want %v", again, kept)
	}
	if small := BoundReplicas([]string{"127.0.0.2:1", "127.0.0.1:1", "127.0.0.2:1"}); !slices.Equal(small, []string{"127.0.0.1:1", "127.0.0.2:1"}) {
		t.Fatalf("a small answer kept %v", small)
	}
}
