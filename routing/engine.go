package routing

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/tlsutil"
)

// recoveryProbeInterval is how often a replica that is failing, or not
// probed successfully yet, is probed: often, so that a restarted plugin is
// back in rotation within about a second, whatever probe_interval says.
const recoveryProbeInterval = time.Second

// Engine is one configured engine: the pool its calls go through, the
// probes of each of its replicas, and its agreed capabilities.
type Engine struct {
	// Immutable after NewEngine.
	Name     string
	Config   *config.Engine
	Pool     *Pool
	Replicas []*Replica
	logger   *slog.Logger
	stateDir string

	// certificates reloads sources, the TLS files of the backends.
	certificates *tlsutil.Watcher
	sources      []*tlsutil.Source

	// capabilities is the engine's agreed function list, read on every
	// call without a lock.
	capabilities atomic.Pointer[Capabilities]

	// waiting counts the calls waiting for a replica, up to max_waiting.
	waiting atomic.Int64

	// members are the engines a merged engine merges; set by NewTable, as
	// a reload may replace them.
	members atomic.Pointer[[]*Engine]

	mu       sync.Mutex    // guards the following
	eligible []int         // backends the pool uses, by index
	inFlight int           // calls under way, so that Drain knows when it is idle
	idle     chan struct{} // closed when inFlight drops to 0 during Drain

	stopProbes context.CancelFunc
	probesDone sync.WaitGroup
}

// EngineOptions are the settings of every engine of a gateway.
type EngineOptions struct {
	PoolOptions
	Logger *slog.Logger

	// StateDir is where the engine's capabilities are kept across
	// restarts; empty keeps them in memory only.
	StateDir string

	// Certificates, when not nil, reloads the backends' TLS files when
	// they change.
	Certificates *tlsutil.Watcher
}

// NewEngine starts connecting to an engine's replicas, for calls and for
// probes, and loads its capabilities from the state folder. Call Start to
// begin probing and Close to end everything.
func NewEngine(cfg *config.Engine, opts EngineOptions) (*Engine, error) {
	// Load each TLS backend's files once, for its calls and its probes.
	sources := make([]*tlsutil.Source, len(cfg.Backends))
	for i, backend := range cfg.Backends {
		if backend.TLS == nil {
			continue
		}
		source, err := tlsutil.NewClientSource(fmt.Sprintf("engines.%s.backends[%d].tls", cfg.Name, i), backend.TLS.Files(), serverName(backend))
		if err != nil {
			return nil, fmt.Errorf("engines.%s.backends[%d].tls: %w", cfg.Name, i, err)
		}
		sources[i] = source
	}

	pool, err := NewPool(cfg, opts.PoolOptions, sources)
	if err != nil {
		return nil, err
	}
	e := &Engine{Name: cfg.Name, Config: cfg, Pool: pool, logger: opts.Logger, stateDir: opts.StateDir, certificates: opts.Certificates}
	for _, source := range sources {
		if source != nil && e.certificates != nil {
			e.certificates.Add(source)
			e.sources = append(e.sources, source)
		}
	}
	for i, backend := range cfg.Backends {
		var creds credentials.TransportCredentials = insecure.NewCredentials()
		if sources[i] != nil {
			creds = newTLSCredentials(sources[i])
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
			index:   i,
			engine:  cfg.Name,
			conn:    conn,
			logger:  opts.Logger,
			state:   ReplicaUnknown,
		})
		e.eligible = append(e.eligible, i)
	}
	if stored, err := loadCapabilities(e.stateDir, e.Name); err != nil {
		e.logger.Warn("reading stored capabilities failed; waiting for a replica", "engine", e.Name, "error", err.Error())
	} else if stored != nil {
		e.capabilities.Store(stored)
		e.logger.Info("capabilities loaded from the state folder", "engine", e.Name,
			"functions", len(stored.Message.GetFunctions()), "fetched", stored.Fetched)
	}
	return e, nil
}

// Start probes every replica now and then regularly, until Close.
func (e *Engine) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	e.stopProbes = cancel
	for _, replica := range e.Replicas {
		e.probesDone.Go(func() {
			e.probeLoop(ctx, replica)
		})
	}
}

// probeLoop probes a replica every probe_interval while it is healthy, and
// every recoveryProbeInterval otherwise.
func (e *Engine) probeLoop(ctx context.Context, replica *Replica) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		replica.probe(ctx, e.Config.ProbeTimeout)
		if ctx.Err() != nil {
			return
		}
		e.reconcile()
		next := e.Config.ProbeInterval
		if replica.Status().State != ReplicaHealthy {
			next = min(next, recoveryProbeInterval)
		}
		timer.Reset(next)
	}
}

// reconcile settles the engine's agreed capabilities from its healthy
// replicas and points the pool at the replicas fit for calls: those not
// known to fail, and whose functions agree with the engine's. A replica
// with other functions could give a function id another meaning, so it
// gets no calls.
func (e *Engine) reconcile() {
	e.mu.Lock()
	defer e.mu.Unlock()

	// Group the healthy replicas by their function lists.
	groups := map[string][]*Replica{}
	var order []string
	for _, replica := range e.Replicas {
		capabilities := replica.healthyCapabilities()
		if capabilities == nil {
			continue
		}
		key := capabilities.key()
		if _, ok := groups[key]; !ok {
			order = append(order, key)
		}
		groups[key] = append(groups[key], replica)
	}

	// The agreed set is the one most healthy replicas return; on a tie,
	// the one already agreed, else the first replica's.
	current := e.capabilities.Load()
	agreed := ""
	for _, key := range order {
		switch {
		case agreed == "", len(groups[key]) > len(groups[agreed]):
			agreed = key
		case len(groups[key]) == len(groups[agreed]) && current != nil && key == current.key():
			agreed = key
		}
	}
	if agreed != "" {
		chosen := groups[agreed][0].Status().Capabilities
		if current == nil || current.key() != agreed {
			e.capabilities.Store(chosen)
			e.logger.Info("capabilities agreed", "engine", e.Name, "functions", len(chosen.Message.GetFunctions()),
				"plugin", chosen.Message.GetPluginIdentifier(), "replicas", len(groups[agreed]))
			if err := storeCapabilities(e.stateDir, e.Name, chosen); err != nil {
				e.logger.Warn("storing capabilities failed", "engine", e.Name, "error", err.Error())
			}
		} else if chosen.Fetched.After(current.Fetched) {
			e.capabilities.Store(chosen) // same functions, fresher date
		}
	}

	// Mark replicas with other functions, and choose the pool's backends.
	agreedSet := e.capabilities.Load()
	var eligible []int
	for _, replica := range e.Replicas {
		capabilities := replica.healthyCapabilities()
		if capabilities != nil && agreedSet != nil {
			if capabilities.key() != agreedSet.key() {
				replica.disagree(agreedSet)
				continue
			}
			replica.agree()
		}
		if replica.Status().State != ReplicaFailing {
			eligible = append(eligible, replica.index)
		}
	}
	if !slices.Equal(eligible, e.eligible) {
		e.eligible = eligible
		e.Pool.Use(eligible)
	}
}

// Capabilities returns the engine's agreed function list, or nil before
// any replica answered and with none stored.
func (e *Engine) Capabilities() *Capabilities {
	return e.capabilities.Load()
}

// SetCapabilities records capabilities learnt outside the probes, from a
// GetCapabilities answer the gateway forwarded, when none are known yet.
func (e *Engine) SetCapabilities(c *Capabilities) {
	e.capabilities.CompareAndSwap(nil, c)
}

// Serving reports whether a replica is connected and fit for calls.
func (e *Engine) Serving() bool {
	return e.Pool.Conn().GetState() == connectivity.Ready
}

// Down reports whether the engine has no way to serve a call now, so that
// a call would wait for a plugin to come back.
func (e *Engine) Down() bool {
	switch e.Pool.Conn().GetState() {
	case connectivity.Ready:
		return false
	case connectivity.TransientFailure:
		// Every replica's connection failed, whatever the last probes
		// found.
		return true
	}
	// Idle or connecting, as at start: down only if no probe found a
	// replica healthy.
	for _, replica := range e.Replicas {
		if replica.Status().State == ReplicaHealthy {
			return false
		}
	}
	return true
}

// Ready reports whether the engine can serve Qlik: a replica is connected,
// or its capabilities are known, so Qlik learns its functions.
func (e *Engine) Ready() bool {
	if e.Merged() {
		for _, member := range e.Members() {
			if !member.Ready() {
				return false
			}
		}
		return true
	}
	return e.Serving() || e.Capabilities() != nil
}

// BeginWait counts a call that opens a stream and may wait for a replica.
// It reports false, counting nothing, when max_waiting calls already
// wait. Each true result needs an EndWait.
func (e *Engine) BeginWait() bool {
	if e.waiting.Add(1) > int64(e.Config.MaxWaiting) {
		e.waiting.Add(-1)
		return false
	}
	return true
}

// EndWait ends what BeginWait counted.
func (e *Engine) EndWait() {
	e.waiting.Add(-1)
}

// Track counts a call on the engine until the returned function is called,
// so that Drain knows when the engine is idle.
func (e *Engine) Track() (done func()) {
	e.mu.Lock()
	e.inFlight++
	e.mu.Unlock()
	return func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.inFlight--
		if e.inFlight == 0 && e.idle != nil {
			close(e.idle)
			e.idle = nil
		}
	}
}

// Drain waits until the engine's calls have ended or ctx is done, then
// closes it. A reload uses it for engines it replaced.
func (e *Engine) Drain(ctx context.Context) {
	e.mu.Lock()
	if e.inFlight > 0 {
		idle := make(chan struct{})
		e.idle = idle
		e.mu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
		}
	} else {
		e.mu.Unlock()
	}
	e.Close()
}

// Close stops the probes and closes every connection; calls still open
// fail.
func (e *Engine) Close() {
	for _, source := range e.sources {
		e.certificates.Remove(source)
	}
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
