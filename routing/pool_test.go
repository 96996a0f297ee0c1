package routing

import (
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc/resolver"

	"github.com/ssegw/ssegw/config"
)

// TestPoolResetBackoffDuringUse resets the pool's reconnect backoff while
// its replica set changes, as a probe loop and another replica's
// reconcile can at the same moment. gRPC walks its subconnections without
// its lock in ResetConnectBackoff, so without Pool's own lock the race
// detector fails this test, and without the race detector the process can
// stop with "concurrent map iteration and map write".
func TestPoolResetBackoffDuringUse(t *testing.T) {
	// Replicas on loopback ports that refuse connections, so that the
	// pool's subconnections fail and back off.
	var replicas []*Replica
	for range 4 {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		address := lis.Addr().String()
		lis.Close()
		replicas = append(replicas, &Replica{Address: address, resolverAddress: resolver.Address{Addr: address}})
	}
	engine := &config.Engine{Name: "R", Balancer: config.BalancerLeastRequest}
	for _, replica := range replicas {
		engine.Backends = append(engine.Backends, config.Backend{Address: replica.Address})
	}
	pool, err := NewPool(engine, PoolOptions{
		Limits:    config.Limits{MaxMessageSize: config.DefaultMaxMessageSize, MaxHeaderListSize: config.DefaultMaxHeaderListSize},
		Keepalive: config.Keepalive{BackendPingInterval: config.DefaultBackendPingInterval},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()

	const rounds = 300
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range rounds {
			// Alternate between two sets, so that every update adds and
			// removes subconnections.
			pool.Use(replicas[i%2*2 : i%2*2+2])
		}
	})
	wg.Go(func() {
		for range rounds {
			pool.ResetBackoff()
		}
	})
	wg.Wait()
}
