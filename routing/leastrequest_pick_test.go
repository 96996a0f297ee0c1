package routing

import (
	"errors"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc/balancer"
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
	refused := errors.New("not ready")
	p.replicas[0].picker = &fakeChildPicker{err: refused}
	if _, err := p.Pick(balancer.PickInfo{}); !errors.Is(err, refused) {
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
