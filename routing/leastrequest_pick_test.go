package routing

import (
	"errors"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"
)

// fakeChildPicker picks its one subconnection, or fails with err.
type fakeChildPicker struct {
	subConn *fakeSubConn
	err     error
	done    func(balancer.DoneInfo)
}

func (p *fakeChildPicker) Pick(balancer.PickInfo) (balancer.PickResult, error) {
	if p.err != nil {
		return balancer.PickResult{}, p.err
	}
	return balancer.PickResult{SubConn: p.subConn, Done: p.done}, nil
}

// newTestLeastRequestPicker returns a picker over replicas with the given
// counts of open calls, named 0, 1, 2...
func newTestLeastRequestPicker(open ...int32) *leastRequestPicker {
	p := &leastRequestPicker{}
	for i, n := range open {
		counter := new(atomic.Int32)
		counter.Store(n)
		p.replicas = append(p.replicas, pickedReplica{
			picker:   &fakeChildPicker{subConn: &fakeSubConn{name: string(rune('0' + i))}},
			inFlight: counter,
			done:     func(balancer.DoneInfo) { counter.Add(-1) },
		})
	}
	return p
}

// mustPick picks from p and fails the test on an error.
func mustPick(t *testing.T, p *leastRequestPicker) balancer.PickResult {
	t.Helper()
	result, err := p.Pick(balancer.PickInfo{})
	if err != nil {
		t.Fatalf("Pick() = %v", err)
	}
	return result
}

func pickedName(t *testing.T, result balancer.PickResult) string {
	t.Helper()
	sc, ok := result.SubConn.(*fakeSubConn)
	if !ok {
		t.Fatalf("picked %v, want a fake subconnection", result.SubConn)
	}
	return sc.name
}

// TestLeastRequestPicksFewestOpen checks that every pick goes to the
// replica with the fewest open calls, here always the second one, and
// that a call's end gives its place back.
func TestLeastRequestPicksFewestOpen(t *testing.T) {
	p := newTestLeastRequestPicker(3, 1, 2)
	for range 100 {
		result := mustPick(t, p)
		if name := pickedName(t, result); name != "1" {
			t.Fatalf("picked replica %s, want 1 (open calls 3, 1, 2)", name)
		}
		if open := p.replicas[1].inFlight.Load(); open != 2 {
			t.Fatalf("replica 1 has %d open calls after the pick, want 2", open)
		}
		result.Done(balancer.DoneInfo{})
	}
	// Now the picks without an end fill replica 1 to the others' level,
	// then share out.
	counts := map[string]int{}
	for range 3 {
		result := mustPick(t, p)
		counts[pickedName(t, result)]++
	}
	if counts["1"] != 2 || counts["2"] != 1 {
		t.Errorf("three picks from open calls 3, 1, 2 went to %v, want two to 1 and one to 2", counts)
	}
}

// TestLeastRequestSpreadsTies checks that replicas with equal counts all
// get calls, rather than the first one of the list each time.
func TestLeastRequestSpreadsTies(t *testing.T) {
	p := newTestLeastRequestPicker(0, 0, 0)
	counts := map[string]int{}
	for range 300 {
		result := mustPick(t, p)
		counts[pickedName(t, result)]++
		result.Done(balancer.DoneInfo{})
	}
	for _, name := range []string{"0", "1", "2"} {
		// Each gets a third on average; fewer than 50 of 300 is
		// below one chance in a billion.
		if counts[name] < 50 {
			t.Errorf("idle replicas got %v of 300 picks, want each at least 50", counts)
		}
	}
}

// TestLeastRequestChildResults checks that a child's failed pick takes no
// place and passes on its error, and that a child's own end of call still
// runs.
func TestLeastRequestChildResults(t *testing.T) {
	p := newTestLeastRequestPicker(0)
	pickErr := errors.New("not ready")
	p.replicas[0].picker = &fakeChildPicker{err: pickErr}
	if _, err := p.Pick(balancer.PickInfo{}); !errors.Is(err, pickErr) {
		t.Errorf("Pick() = %v, want the child's error", err)
	}
	if open := p.replicas[0].inFlight.Load(); open != 0 {
		t.Errorf("a failed pick left %d open calls, want 0", open)
	}

	var childDone atomic.Int32
	p.replicas[0].picker = &fakeChildPicker{subConn: &fakeSubConn{name: "0"}, done: func(balancer.DoneInfo) { childDone.Add(1) }}
	mustPick(t, p).Done(balancer.DoneInfo{})
	if childDone.Load() != 1 || p.replicas[0].inFlight.Load() != 0 {
		t.Errorf("after the call's end: child's end ran %d times, %d open calls; want 1 and 0", childDone.Load(), p.replicas[0].inFlight.Load())
	}
}

// TestLeastRequestPickAllocatesNothing checks the reason this picker
// exists beside gRPC's: a pick and its end allocate nothing.
func TestLeastRequestPickAllocatesNothing(t *testing.T) {
	p := newTestLeastRequestPicker(0, 2, 1, 0)
	allocs := testing.AllocsPerRun(1000, func() {
		result, err := p.Pick(balancer.PickInfo{})
		if err != nil {
			t.Fatal(err)
		}
		result.Done(balancer.DoneInfo{})
	})
	if allocs != 0 {
		t.Errorf("a pick and its end allocate %v times, want 0", allocs)
	}
}

// TestLeastRequestSpreadsTiesBesideBusy checks that replicas tied for
// fewest calls share the picks evenly when another replica is busier,
// wherever the busy one sits in the list.
func TestLeastRequestSpreadsTiesBesideBusy(t *testing.T) {
	for _, open := range [][]int32{{5, 0, 0}, {1, 1, 5}, {0, 5, 0}} {
		p := newTestLeastRequestPicker(open...)
		counts := map[string]int{}
		for range 4000 {
			result := mustPick(t, p)
			counts[pickedName(t, result)]++
			result.Done(balancer.DoneInfo{})
		}
		for i, n := range open {
			name := string(rune('0' + i))
			switch {
			case n == 5 && counts[name] != 0:
				t.Errorf("open calls %v: the busy replica %s got %d of 4000 picks, want none", open, name, counts[name])
			case n != 5 && counts[name] < 1800:
				// Each gets 2000 on average, with a standard deviation of
				// 32: fewer than 1800 is six deviations off, about one
				// chance in a billion for each of the six checks. A
				// picker that favours one of them two to one gives the
				// other 1333.
				t.Errorf("open calls %v: picks went %v, want each idle replica at least 1800 of 4000", open, counts)
			}
		}
	}
}

// balancerClientConn is gRPC's side for the least_request balancer in
// tests: it makes fake subconnections and keeps the last state published.
type balancerClientConn struct {
	balancer.ClientConn
	subConns map[string]*listenedSubConn // the latest one per address
	inFlight map[string]*atomic.Int32    // each replica's count of open calls, by address
	state    balancer.State
}

func (c *balancerClientConn) NewSubConn(addresses []resolver.Address, opts balancer.NewSubConnOptions) (balancer.SubConn, error) {
	sc := &listenedSubConn{fakeSubConn: fakeSubConn{name: addresses[0].Addr}, state: opts.StateListener}
	c.subConns[addresses[0].Addr] = sc
	return sc, nil
}

func (c *balancerClientConn) UpdateState(state balancer.State) { c.state = state }

func (c *balancerClientConn) ResolveNow(resolver.ResolveNowOptions) {}

// listenedSubConn is a subconnection whose connectivity and health the
// test sets, as gRPC would report them to pick_first.
type listenedSubConn struct {
	fakeSubConn
	state, health func(balancer.SubConnState)
}

func (sc *listenedSubConn) Connect()  {}
func (sc *listenedSubConn) Shutdown() {}
func (sc *listenedSubConn) RegisterHealthListener(listener func(balancer.SubConnState)) {
	sc.health = listener
}

// ready reports the subconnection connected and healthy.
func (sc *listenedSubConn) ready() {
	sc.state(balancer.SubConnState{ConnectivityState: connectivity.Connecting})
	sc.state(balancer.SubConnState{ConnectivityState: connectivity.Ready})
	sc.health(balancer.SubConnState{ConnectivityState: connectivity.Ready})
}

// useReplicas hands the balancer the given addresses, each with its
// replica's count of open calls, kept in cc, as Pool.Use does.
func useReplicas(t *testing.T, cc *balancerClientConn, b balancer.Balancer, addresses ...string) {
	t.Helper()
	var state resolver.State
	for _, address := range addresses {
		if cc.inFlight[address] == nil {
			cc.inFlight[address] = new(atomic.Int32)
		}
		addr := withInFlight(resolver.Address{Addr: address}, cc.inFlight[address])
		state.Endpoints = append(state.Endpoints, resolver.Endpoint{Addresses: []resolver.Address{addr}})
	}
	if err := b.UpdateClientConnState(balancer.ClientConnState{ResolverState: state}); err != nil {
		t.Fatalf("UpdateClientConnState(%v) = %v", addresses, err)
	}
}

// pickFrom picks with the balancer's current picker and returns the
// replica's address and the call's end.
func pickFrom(t *testing.T, cc *balancerClientConn) (string, func()) {
	t.Helper()
	if cc.state.ConnectivityState != connectivity.Ready {
		t.Fatalf("balancer state %v, want READY", cc.state.ConnectivityState)
	}
	result, err := cc.state.Picker.Pick(balancer.PickInfo{})
	if err != nil {
		t.Fatalf("Pick() = %v", err)
	}
	sc, ok := result.SubConn.(*listenedSubConn)
	if !ok {
		t.Fatalf("picked %v, want a listened subconnection", result.SubConn)
	}
	return sc.name, func() { result.Done(balancer.DoneInfo{}) }
}

// TestLeastRequestCountsAcrossChanges holds a call on replica a, then takes
// a out of service and back in two ways: failing health checks, and
// leaving the resolver's list. Each time, the calls that follow must go
// to b, because a still serves its held call.
func TestLeastRequestCountsAcrossChanges(t *testing.T) {
	cc := &balancerClientConn{subConns: map[string]*listenedSubConn{}, inFlight: map[string]*atomic.Int32{}}
	b := leastRequestBuilder.Build(cc, balancer.BuildOptions{})
	defer b.Close()
	useReplicas(t, cc, b, "a", "b")
	cc.subConns["a"].ready()
	cc.subConns["b"].ready()

	// With no call open, either may take one: pick until a holds one.
	for {
		name, done := pickFrom(t, cc)
		if name == "a" {
			break
		}
		done()
	}
	checkAllToB := func(when string) {
		t.Helper()
		for range 50 {
			name, done := pickFrom(t, cc)
			if name != "b" {
				t.Fatalf("%s: a call went to %s, want b: a has a call open", when, name)
			}
			done()
		}
	}
	checkAllToB("with both ready")

	cc.subConns["a"].health(balancer.SubConnState{ConnectivityState: connectivity.TransientFailure})
	checkAllToB("with a failing its health checks")
	cc.subConns["a"].health(balancer.SubConnState{ConnectivityState: connectivity.Ready})
	checkAllToB("with a healthy again")

	useReplicas(t, cc, b, "b")
	checkAllToB("with a out of the resolver's list")
	useReplicas(t, cc, b, "a", "b")
	cc.subConns["a"].ready()
	checkAllToB("with a back in the list")
}

// TestLeastRequestParseConfig checks that the balancer takes an empty
// configuration and rejects settings it does not have, such as gRPC's
// choiceCount.
func TestLeastRequestParseConfig(t *testing.T) {
	if _, err := leastRequestBuilder.ParseConfig([]byte(`{}`)); err != nil {
		t.Errorf("ParseConfig({}) = %v, want nil", err)
	}
	if _, err := leastRequestBuilder.ParseConfig([]byte(`{"choiceCount": 2}`)); err == nil {
		t.Error(`ParseConfig({"choiceCount": 2}) = nil, want an error`)
	}
}
