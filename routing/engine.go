package routing

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ssegw/ssegw/config"
)

// Engine is one configured engine: the pool its calls go through, and the
// probes of each of its replicas.
type Engine struct {
	// Immutable after NewEngine.
	Name     string
	Config   *config.Engine
	Pool     *Pool
	Replicas []*Replica

	// capabilities is the engine's function list as last learnt, from a
	// probe or from a GetCapabilities answer the gateway forwarded.
	capabilities atomic.Pointer[Capabilities]

	stopProbes context.CancelFunc
	probesDone sync.WaitGroup
}

// NewEngine starts connecting to an engine's replicas, for calls and for
// probes. Call Start to begin probing and Close to end everything.
func NewEngine(cfg *config.Engine, opts PoolOptions, logger *slog.Logger) (*Engine, error) {
	pool, err := NewPool(cfg, opts)
	if err != nil {
		return nil, err
	}
	e := &Engine{Name: cfg.Name, Config: cfg, Pool: pool}
	for i, backend := range cfg.Backends {
		var creds credentials.TransportCredentials = insecure.NewCredentials()
		if backend.TLS != nil {
			tlsConfig, err := backend.TLS.Files().ClientConfig(serverName(backend))
			if err != nil {
				e.Close()
				return nil, fmt.Errorf("engines.%s.backends[%d].tls: %w", cfg.Name, i, err)
			}
			creds = newTLSCredentials(tlsConfig)
		}
		dialOptions := []grpc.DialOption{
			grpc.WithTransportCredentials(creds),
			grpc.WithConnectParams(reconnectBackoff),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(int(opts.Limits.MaxMessageSize))),
		}
		if opts.UserAgent != "" {
			dialOptions = append(dialOptions, grpc.WithUserAgent(opts.UserAgent))
		}
		conn, err := grpc.NewClient("passthrough:///"+backend.Address, dialOptions...)
		if err != nil {
			e.Close()
			return nil, fmt.Errorf("engines.%s.backends[%d]: %w", cfg.Name, i, err)
		}
		e.Replicas = append(e.Replicas, &Replica{
			Address: backend.Address,
			engine:  cfg.Name,
			conn:    conn,
			logger:  logger,
			state:   ReplicaUnknown,
		})
	}
	return e, nil
}

// Start probes every replica now and then every probe interval, until
// Close.
func (e *Engine) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	e.stopProbes = cancel
	for _, replica := range e.Replicas {
		e.probesDone.Go(func() {
			e.probeLoop(ctx, replica)
		})
	}
}

func (e *Engine) probeLoop(ctx context.Context, replica *Replica) {
	ticker := time.NewTicker(e.Config.ProbeInterval)
	defer ticker.Stop()
	for {
		if capabilities := replica.probe(ctx, e.Config.ProbeTimeout); capabilities != nil {
			e.SetCapabilities(capabilities)
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// Capabilities returns the engine's function list as last learnt, or nil
// before any replica answered.
func (e *Engine) Capabilities() *Capabilities {
	return e.capabilities.Load()
}

// SetCapabilities records capabilities newer than the ones known.
func (e *Engine) SetCapabilities(c *Capabilities) {
	for {
		current := e.capabilities.Load()
		if current != nil && current.Fetched.After(c.Fetched) {
			return
		}
		if e.capabilities.CompareAndSwap(current, c) {
			return
		}
	}
}

// Ready reports whether the engine can serve Qlik: a replica is connected,
// or its capabilities are known, so Qlik learns its functions.
func (e *Engine) Ready() bool {
	return e.Pool.Conn().GetState() == connectivity.Ready || e.Capabilities() != nil
}

// Close stops the probes and closes every connection.
func (e *Engine) Close() {
	if e.stopProbes != nil {
		e.stopProbes()
		e.probesDone.Wait()
	}
	for _, replica := range e.Replicas {
		replica.conn.Close()
	}
	if e.Pool != nil {
		e.Pool.Close()
	}
}
