package routing

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
)

// cappedName is the balancer that enforces an engine's max_in_flight. gRPC
// (as of grpc-go v1.85) has no balancer that bounds the calls open on
// each backend, so this one wraps the engine's round_robin or
// least_request: it takes the child's pick unless that replica is full,
// then any ready replica with room, and when every ready replica is full,
// the call waits for a replica to finish a call.
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
	b := &cappedBalancer{opts: opts, subConns: map[balancer.SubConn]*cappedSubConn{}, view: &cappedView{}}
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
	// subConns are the subconnections the child made and has not shut
	// down. An entry stays the same until then, so the pickers share its
	// count of open calls.
	subConns map[balancer.SubConn]*cappedSubConn
	view     *cappedView    // made from subConns at each change, for the pickers
	state    balancer.State // the child's last state, with its own picker
}

// cappedSubConn is a subconnection with the calls open on it.
//
// NOTE: the count is per subconnection, not per plugin. A replica that
// leaves the pool and comes back gets a new subconnection, counted from 0
// while calls on the old one finish, so for that moment the plugin can
// have more than max_in_flight calls open.
type cappedSubConn struct {
	subConn balancer.SubConn
	open    atomic.Int64
	// done ends a pick of the subconnection when the child's pick has no
	// Done of its own. It is made once, so that such picks allocate
	// nothing.
	done func(balancer.DoneInfo)
	// replicaInFlight is the replica's count of open calls, which the child
	// keeps for its own picks. It is nil in tests that make subconnections
	// without one. pickedDone ends a pick that bypassed the child, and
	// counts its end there too. It is made once, as done is.
	replicaInFlight *atomic.Int32
	pickedDone      func(balancer.DoneInfo)
	ready           bool // guarded by cappedBalancer.mu
}

// reserve takes a place among the subconnection's open calls if one is
// free. It never counts past limit, even for a moment, so that a pick that
// finds the subconnection full cannot make another pick miss a free place.
func (sc *cappedSubConn) reserve(limit int64) bool {
	for {
		open := sc.open.Load()
		if open >= limit {
			return false
		}
		if sc.open.CompareAndSwap(open, open+1) {
			return true
		}
	}
}

// cappedView is an unchanging copy of the balancer's subconnections, which
// a picker reads without a lock.
type cappedView struct {
	bySubConn map[balancer.SubConn]*cappedSubConn
	ready     []*cappedSubConn
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

// addSubConn starts counting the calls of a subconnection the child made.
func (b *cappedBalancer) addSubConn(sc *cappedSubConn) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.subConns[sc.subConn] = sc
	b.updateView()
}

// setSubConnState records whether a subconnection is ready. It reports
// whether a subconnection that was ready is now shut down, because the
// pickers' views still list it, and pick_first publishes no picker for a
// shutdown (grpc-go v1.85).
func (b *cappedBalancer) setSubConnState(sc *cappedSubConn, state connectivity.State) (shutDownReady bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	wasReady := sc.ready
	sc.ready = state == connectivity.Ready
	if state == connectivity.Shutdown {
		// Calls still open on it hold the entry and end on it.
		delete(b.subConns, sc.subConn)
		b.updateView()
		return wasReady
	}
	if wasReady != sc.ready {
		b.updateView()
	}
	return false
}

// updateView copies subConns for the pickers published from now on. The
// caller holds mu.
func (b *cappedBalancer) updateView() {
	view := &cappedView{bySubConn: make(map[balancer.SubConn]*cappedSubConn, len(b.subConns))}
	for subConn, sc := range b.subConns {
		view.bySubConn[subConn] = sc
		if sc.ready {
			view.ready = append(view.ready, sc)
		}
	}
	b.view = view
}

// publish hands gRPC a picker over the child's latest one.
func (b *cappedBalancer) publish() {
	b.publishMu.Lock()
	defer b.publishMu.Unlock()
	b.mu.Lock()
	state, view := b.state, b.view
	b.mu.Unlock()
	if state.Picker == nil {
		return
	}
	state.Picker = &cappedPicker{child: state.Picker, balancer: b, view: view}
	b.cc.ClientConn.UpdateState(state)
}

// release frees a place on sc when its call ends, and wakes the calls
// waiting for one.
func (b *cappedBalancer) release(sc *cappedSubConn, childDone func(balancer.DoneInfo), done balancer.DoneInfo) {
	sc.open.Add(-1)
	if childDone != nil {
		childDone(done)
	}
	if b.waiting.CompareAndSwap(true, false) {
		b.publish()
	}
}

// cappedClientConn intercepts the child's subconnections, to count their
// calls, and its pickers, to wrap them.
type cappedClientConn struct {
	balancer.ClientConn
	balancer *cappedBalancer
}

func (c *cappedClientConn) NewSubConn(addresses []resolver.Address, opts balancer.NewSubConnOptions) (balancer.SubConn, error) {
	b := c.balancer
	sc := &cappedSubConn{replicaInFlight: inFlightOf(addresses)}
	sc.done = func(done balancer.DoneInfo) { b.release(sc, nil, done) }
	sc.pickedDone = sc.done
	if sc.replicaInFlight != nil {
		sc.pickedDone = func(done balancer.DoneInfo) {
			sc.replicaInFlight.Add(-1)
			b.release(sc, nil, done)
		}
	}
	childListener := opts.StateListener
	opts.StateListener = func(state balancer.SubConnState) {
		// Recorded before the child's listener runs, so that the picker
		// the child publishes in turn includes the change.
		shutDownReady := b.setSubConnState(sc, state.ConnectivityState)
		if childListener != nil {
			childListener(state)
		}
		if shutDownReady {
			b.publish()
		}
	}
	subConn, err := c.ClientConn.NewSubConn(addresses, opts)
	if err != nil {
		return nil, err
	}
	sc.subConn = subConn
	b.addSubConn(sc)
	return subConn, nil
}

func (c *cappedClientConn) UpdateState(state balancer.State) {
	c.balancer.mu.Lock()
	c.balancer.state = state
	c.balancer.mu.Unlock()
	c.balancer.publish()
}

// cappedPicker takes the child's pick unless that subconnection is full,
// and then another ready one that has room.
type cappedPicker struct {
	child    balancer.Picker
	balancer *cappedBalancer
	view     *cappedView
	// next spreads the picks that bypass the child over the ready
	// subconnections.
	next atomic.Uint32
}

// pickTries is the max number of picks requested from the child while
// the replica it picks is full, before the picker looks at every ready
// replica itself. A second pick lets the child's own order choose where it
// can: round_robin moves on to the next replica, and least_request picks
// again among the replicas tied for fewest calls, if several are.
const pickTries = 2

func (p *cappedPicker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	limit := p.balancer.maxInFlight.Load()
	for range pickTries {
		result, err := p.child.Pick(info)
		if err != nil {
			return result, err
		}
		// A subconnection missing from the view is shut down already, so
		// gRPC could not use it anyway.
		if sc, ok := p.view.bySubConn[result.SubConn]; ok && sc.reserve(limit) {
			return p.track(result, sc), nil
		}
		if result.Done != nil {
			// The child counts its picks too, as least_request does.
			result.Done(balancer.DoneInfo{})
		}
	}

	// The child's choices are full, but another ready replica may not be.
	if result, ok := p.pickReady(limit); ok {
		return result, nil
	}
	// Mark the wait, then look once more. A call that ends after the mark
	// publishes a new picker, and gRPC picks again when one arrives while
	// it picks. A call that ended before the mark published none, but it
	// left the room that this second look finds.
	p.balancer.waiting.Store(true)
	if result, ok := p.pickReady(limit); ok {
		return result, nil
	}
	// Every ready replica is full. gRPC holds a call that waits for ready
	// until the next picker, which a finishing call publishes, and fails
	// any other call at once with Unavailable and this error's text. That
	// other call is one of an engine with reconnect_buffer: 0, which
	// promises exactly that. ErrNoSubConnAvailable would hold it too.
	return balancer.PickResult{}, ErrEveryReplicaFull
}

// ErrEveryReplicaFull is the pick error of a call that finds max_in_flight
// calls open on every ready replica.
var ErrEveryReplicaFull = errors.New("every ready replica has max_in_flight calls open")

// pickReady reserves a place on the first ready subconnection with room,
// starting at a different one each time. The child does not make this
// pick, so the call is counted on the replica here, where least_request
// and the probes see it as well.
func (p *cappedPicker) pickReady(limit int64) (balancer.PickResult, bool) {
	ready := p.view.ready
	if len(ready) == 0 {
		return balancer.PickResult{}, false
	}
	start := int(p.next.Add(1) % uint32(len(ready)))
	for i := range ready {
		sc := ready[(start+i)%len(ready)]
		if sc.reserve(limit) {
			if sc.replicaInFlight != nil {
				sc.replicaInFlight.Add(1)
			}
			return balancer.PickResult{SubConn: sc.subConn, Done: sc.pickedDone}, true
		}
	}
	return balancer.PickResult{}, false
}

// track makes a pick's end free its place among the replica's open calls,
// and wake the calls waiting for one.
func (p *cappedPicker) track(result balancer.PickResult, sc *cappedSubConn) balancer.PickResult {
	childDone := result.Done
	if childDone == nil {
		result.Done = sc.done
		return result
	}
	result.Done = func(done balancer.DoneInfo) {
		p.balancer.release(sc, childDone, done)
	}
	return result
}

var (
	_ balancer.Builder      = cappedBuilder{}
	_ balancer.ConfigParser = cappedBuilder{}
	_ balancer.Picker       = (*cappedPicker)(nil)
)
