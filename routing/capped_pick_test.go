package routing

import (
	"errors"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"
)

// fakeSubConn is a subconnection that the balancer only compares.
type fakeSubConn struct {
	balancer.SubConn
	name string
}

// listeningClientConn makes fake subconnections, keeps their state
// listeners, and records the last picker published.
type listeningClientConn struct {
	balancer.ClientConn
	listeners map[balancer.SubConn]func(balancer.SubConnState)
	picker    balancer.Picker
}

func (c *listeningClientConn) NewSubConn(addresses []resolver.Address, opts balancer.NewSubConnOptions) (balancer.SubConn, error) {
	sc := &fakeSubConn{name: addresses[0].Addr}
	c.listeners[sc] = opts.StateListener
	return sc, nil
}

func (c *listeningClientConn) UpdateState(state balancer.State) {
	c.picker = state.Picker
}

// fixedPicker is a child picker that always picks the same subconnection.
type fixedPicker struct {
	subConn balancer.SubConn
}

func (p fixedPicker) Pick(balancer.PickInfo) (balancer.PickResult, error) {
	return balancer.PickResult{SubConn: p.subConn}, nil
}

// newPickTestBalancer returns a balancer with max_in_flight 1 and the
// subconnections named names, in state connectivity.Ready, and the
// client connection it publishes to.
func newPickTestBalancer(t *testing.T, names ...string) (*cappedBalancer, *listeningClientConn, []balancer.SubConn) {
	t.Helper()
	cc := &listeningClientConn{listeners: map[balancer.SubConn]func(balancer.SubConnState){}}
	b := cappedBuilder{}.Build(cc, balancer.BuildOptions{}).(*cappedBalancer)
	b.maxInFlight.Store(1)
	var subConns []balancer.SubConn
	for _, name := range names {
		sc, err := b.cc.NewSubConn([]resolver.Address{{Addr: name}}, balancer.NewSubConnOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cc.listeners[sc](balancer.SubConnState{ConnectivityState: connectivity.Ready})
		subConns = append(subConns, sc)
	}
	return b, cc, subConns
}

// pickName picks once from the published picker and returns the name of
// the subconnection picked, with the pick's Done.
func pickName(t *testing.T, cc *listeningClientConn) (string, func(balancer.DoneInfo), error) {
	t.Helper()
	result, err := cc.picker.Pick(balancer.PickInfo{})
	if err != nil {
		return "", nil, err
	}
	return result.SubConn.(*fakeSubConn).name, result.Done, nil
}

// TestCappedPickReadyFallback checks that when the child's pick is full,
// the picker takes another subconnection with room, but only one that is
// ready and not shut down, and that the child's pick with room costs no
// allocation.
func TestCappedPickReadyFallback(t *testing.T) {
	b, cc, subConns := newPickTestBalancer(t, "a", "b")
	b.cc.UpdateState(balancer.State{ConnectivityState: connectivity.Ready, Picker: fixedPicker{subConns[0]}})

	allocations := testing.AllocsPerRun(100, func() {
		result, err := cc.picker.Pick(balancer.PickInfo{})
		if err != nil {
			t.Fatalf("Pick() with room = %v", err)
		}
		result.Done(balancer.DoneInfo{})
	})
	if allocations != 0 {
		t.Errorf("Pick() and Done() of the child's pick allocate %v times, want 0", allocations)
	}

	// The child's choice has room, so it is kept.
	first, doneFirst, err := pickName(t, cc)
	if err != nil || first != "a" {
		t.Fatalf("first Pick() = %q, %v, want a", first, err)
	}
	// It is full now, so the other ready one is taken.
	second, doneSecond, err := pickName(t, cc)
	if err != nil || second != "b" {
		t.Fatalf("Pick() with a full = %q, %v, want b", second, err)
	}
	// Both are full, so the pick fails, which holds a call that waits for
	// ready until the next picker.
	if name, _, err := pickName(t, cc); !errors.Is(err, ErrEveryReplicaFull) {
		t.Fatalf("Pick() with both full = %q, %v, want ErrEveryReplicaFull", name, err)
	}

	// A subconnection that is not ready is skipped. Its change of state
	// reaches the next picker, as the child publishes one for it.
	doneSecond(balancer.DoneInfo{})
	cc.listeners[subConns[1]](balancer.SubConnState{ConnectivityState: connectivity.Idle})
	b.cc.UpdateState(balancer.State{ConnectivityState: connectivity.Ready, Picker: fixedPicker{subConns[0]}})
	if name, _, err := pickName(t, cc); !errors.Is(err, ErrEveryReplicaFull) {
		t.Errorf("Pick() with a full and b idle = %q, %v, want ErrEveryReplicaFull", name, err)
	}

	// Once ready again it is taken; once shut down it is not, and the
	// balancer publishes a picker without it on its own.
	cc.listeners[subConns[1]](balancer.SubConnState{ConnectivityState: connectivity.Ready})
	b.cc.UpdateState(balancer.State{ConnectivityState: connectivity.Ready, Picker: fixedPicker{subConns[0]}})
	name, doneReady, err := pickName(t, cc)
	if err != nil || name != "b" {
		t.Fatalf("Pick() with a full and b ready again = %q, %v, want b", name, err)
	}
	doneReady(balancer.DoneInfo{})
	cc.listeners[subConns[1]](balancer.SubConnState{ConnectivityState: connectivity.Shutdown})
	if name, _, err := pickName(t, cc); !errors.Is(err, ErrEveryReplicaFull) {
		t.Errorf("Pick() with a full and b shut down = %q, %v, want ErrEveryReplicaFull", name, err)
	}

	// The end of the call on a frees its place.
	doneFirst(balancer.DoneInfo{})
	if name, _, err := pickName(t, cc); err != nil || name != "a" {
		t.Errorf("Pick() after a's call ended = %q, %v, want a", name, err)
	}
}

// TestCappedPickReadyCountsOnReplica checks that a pick that bypasses the
// full child counts the call on its replica until the call ends, as the
// child counts its own picks, so that least_request and the probes see
// it. Before, such a call went uncounted.
func TestCappedPickReadyCountsOnReplica(t *testing.T) {
	cc := &listeningClientConn{listeners: map[balancer.SubConn]func(balancer.SubConnState){}}
	b := cappedBuilder{}.Build(cc, balancer.BuildOptions{}).(*cappedBalancer)
	b.maxInFlight.Store(1)
	var subConns []balancer.SubConn
	counters := []*atomic.Int32{new(atomic.Int32), new(atomic.Int32)}
	for i, name := range []string{"a", "b"} {
		sc, err := b.cc.NewSubConn([]resolver.Address{withInFlight(resolver.Address{Addr: name}, counters[i])}, balancer.NewSubConnOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cc.listeners[sc](balancer.SubConnState{ConnectivityState: connectivity.Ready})
		subConns = append(subConns, sc)
	}
	b.cc.UpdateState(balancer.State{ConnectivityState: connectivity.Ready, Picker: fixedPicker{subConns[0]}})

	// The child's pick of a fills it; the next pick bypasses the child.
	if name, _, err := pickName(t, cc); err != nil || name != "a" {
		t.Fatalf("first Pick() = %q, %v, want a", name, err)
	}
	name, done, err := pickName(t, cc)
	if err != nil || name != "b" {
		t.Fatalf("Pick() with a full = %q, %v, want b", name, err)
	}
	if got := counters[1].Load(); got != 1 {
		t.Errorf("calls counted on b after a pick that bypassed the child = %d, want 1", got)
	}
	done(balancer.DoneInfo{})
	if got := counters[1].Load(); got != 0 {
		t.Errorf("calls counted on b after its call ended = %d, want 0", got)
	}

	allocations := testing.AllocsPerRun(100, func() {
		result, err := cc.picker.Pick(balancer.PickInfo{})
		if err != nil {
			t.Fatalf("Pick() with a full = %v", err)
		}
		result.Done(balancer.DoneInfo{})
	})
	if allocations != 0 {
		t.Errorf("Pick() and Done() bypassing the child allocate %v times, want 0", allocations)
	}
}
