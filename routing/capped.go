package routing

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/serviceconfig"
)

// cappedName is the balancer that enforces an engine's max_in_flight. gRPC
// (as of grpc-go v1.85) has no balancer that bounds the calls open on
// each backend, so this one wraps the engine's round_robin or
// least_request: it takes the child's pick unless that replica is full,
// and when every replica it tried is full, the call waits for a replica
// to finish a call.
const cappedName = "ssegw_max_in_flight"

func init() {
	balancer.Register(cappedBuilder{})
}

type cappedConfig struct {
	serviceconfig.LoadBalancingConfig
	MaxInFlight int64                        `json:"maxInFlight"`
	ChildPolicy []map[string]json.RawMessage `json:"childPolicy"`

	childBuilder balancer.Builder
	childConfig  serviceconfig.LoadBalancingConfig
}

type cappedBuilder struct{}

func (cappedBuilder) Name() string { return cappedName }

func (cappedBuilder) ParseConfig(raw json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	cfg := &cappedConfig{}
	if err := json.Unmarshal(raw, cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", cappedName, err)
	}
	if cfg.MaxInFlight < 1 || len(cfg.ChildPolicy) != 1 || len(cfg.ChildPolicy[0]) != 1 {
		return nil, fmt.Errorf("%s: needs maxInFlight >= 1 and one child policy", cappedName)
	}
	for name, childRaw := range cfg.ChildPolicy[0] {
		cfg.childBuilder = balancer.Get(name)
		if cfg.childBuilder == nil {
			return nil, fmt.Errorf("%s: unknown child policy %q", cappedName, name)
		}
		if parser, ok := cfg.childBuilder.(balancer.ConfigParser); ok {
			childConfig, err := parser.ParseConfig(childRaw)
			if err != nil {
				return nil, err
			}
			cfg.childConfig = childConfig
		}
	}
	return cfg, nil
}

func (cappedBuilder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	b := &cappedBalancer{opts: opts, open: map[balancer.SubConn]*atomic.Int64{}}
	b.cc = &cappedClientConn{ClientConn: cc, balancer: b}
	return b
}

// cappedBalancer counts the calls open on each subconnection.
type cappedBalancer struct {
	// Immutable after Build.
	cc   *cappedClientConn
	opts balancer.BuildOptions

	maxInFlight atomic.Int64

	// waiting is set when a pick found every replica full; the next call
	// that ends then publishes a new picker, which makes gRPC retry the
	// waiting picks.
	waiting atomic.Bool

	// publishMu makes reading the child's state and publishing its picker
	// one step, so that an ending call never installs an older picker over
	// a newer one that the child published meanwhile.
	publishMu sync.Mutex

	mu    sync.Mutex // guards the following
	child balancer.Balancer
	open  map[balancer.SubConn]*atomic.Int64
	state balancer.State // the child's last state, with its own picker
}

func (b *cappedBalancer) UpdateClientConnState(s balancer.ClientConnState) error {
	cfg, ok := s.BalancerConfig.(*cappedConfig)
	if !ok {
		return fmt.Errorf("%s: unexpected configuration %T", cappedName, s.BalancerConfig)
	}
	b.maxInFlight.Store(cfg.MaxInFlight)
	b.mu.Lock()
	if b.child == nil {
		b.child = cfg.childBuilder.Build(b.cc, b.opts)
	}
	child := b.child
	b.mu.Unlock()
	s.BalancerConfig = cfg.childConfig
	return child.UpdateClientConnState(s)
}

func (b *cappedBalancer) ResolverError(err error) {
	if child := b.childBalancer(); child != nil {
		child.ResolverError(err)
	}
}

// UpdateSubConnState is deprecated in gRPC's API and never called for
// subconnections made with a state listener, as the children make them.
func (b *cappedBalancer) UpdateSubConnState(balancer.SubConn, balancer.SubConnState) {}

func (b *cappedBalancer) Close() {
	if child := b.childBalancer(); child != nil {
		child.Close()
	}
}

func (b *cappedBalancer) ExitIdle() {
	if child := b.childBalancer(); child != nil {
		child.ExitIdle()
	}
}

func (b *cappedBalancer) childBalancer() balancer.Balancer {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.child
}

// reserve takes a place among a subconnection's open calls if one is
// free, and returns its counter either way. It counts under mu, so that
// UpdateState never deletes a counter between its lookup and its count.
func (b *cappedBalancer) reserve(sc balancer.SubConn, limit int64) (*atomic.Int64, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, ok := b.open[sc]
	if !ok {
		n = &atomic.Int64{}
		b.open[sc] = n
	}
	if n.Add(1) > limit {
		n.Add(-1)
		return n, false
	}
	return n, true
}

// publish hands gRPC a picker over the child's latest one.
func (b *cappedBalancer) publish() {
	b.publishMu.Lock()
	defer b.publishMu.Unlock()
	b.mu.Lock()
	state := b.state
	b.mu.Unlock()
	if state.Picker == nil {
		return
	}
	state.Picker = &cappedPicker{child: state.Picker, balancer: b}
	b.cc.ClientConn.UpdateState(state)
}

// cappedClientConn intercepts the child's pickers to wrap them.
type cappedClientConn struct {
	balancer.ClientConn
	balancer *cappedBalancer
}

func (c *cappedClientConn) UpdateState(state balancer.State) {
	c.balancer.mu.Lock()
	c.balancer.state = state
	// Subconnections come and go as replicas do; forget idle counters so
	// that the map does not grow over months of restarts.
	if len(c.balancer.open) > 64 {
		for sc, n := range c.balancer.open {
			if n.Load() == 0 {
				delete(c.balancer.open, sc)
			}
		}
	}
	c.balancer.mu.Unlock()
	c.balancer.publish()
}

// cappedPicker takes the child's pick unless that subconnection is full.
type cappedPicker struct {
	child    balancer.Picker
	balancer *cappedBalancer
}

// pickTries bounds how often the child is asked for another replica when
// the one it picked is full.
const pickTries = 8

func (p *cappedPicker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	limit := p.balancer.maxInFlight.Load()
	for range pickTries {
		result, err := p.child.Pick(info)
		if err != nil {
			return result, err
		}
		open, ok := p.balancer.reserve(result.SubConn, limit)
		if !ok {
			// Mark the wait, then look once more. A call that ends after
			// the mark publishes a new picker, and gRPC picks again when
			// one arrives while it picks; a call that ended before the
			// mark published none, but left the room this look finds.
			p.balancer.waiting.Store(true)
			if open, ok = p.balancer.reserve(result.SubConn, limit); ok {
				return p.track(result, open), nil
			}
			if result.Done != nil {
				// The child counts its picks too, as least_request does.
				result.Done(balancer.DoneInfo{})
			}
			continue
		}
		return p.track(result, open), nil
	}
	// Every replica tried is full: gRPC holds the call until the next
	// picker, which a finishing call publishes.
	return balancer.PickResult{}, balancer.ErrNoSubConnAvailable
}

// track makes a pick's end free its place among the replica's open calls,
// and wake the calls waiting for one.
func (p *cappedPicker) track(result balancer.PickResult, open *atomic.Int64) balancer.PickResult {
	childDone := result.Done
	result.Done = func(done balancer.DoneInfo) {
		open.Add(-1)
		if childDone != nil {
			childDone(done)
		}
		if p.balancer.waiting.CompareAndSwap(true, false) {
			p.balancer.publish()
		}
	}
	return result
}

var (
	_ balancer.Builder      = cappedBuilder{}
	_ balancer.ConfigParser = cappedBuilder{}
	_ balancer.Picker       = (*cappedPicker)(nil)
)
