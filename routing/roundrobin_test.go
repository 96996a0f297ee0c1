package routing

import (
	"testing"

	"google.golang.org/grpc/balancer"
)

// TestRoundRobinPicksInTurn checks that the round_robin picker takes the
// ready replicas in turn, counts each call on its replica until the call
// ends, and allocates nothing per pick.
func TestRoundRobinPicksInTurn(t *testing.T) {
	leastRequest := newTestLeastRequestPicker(0, 0, 0) // for its replicas
	p := newRoundRobinPicker(leastRequest.replicas).(*roundRobinPicker)

	var names []string
	var ends []func(balancer.DoneInfo)
	for range 6 {
		result, err := p.Pick(balancer.PickInfo{})
		if err != nil {
			t.Fatalf("Pick() = %v", err)
		}
		names = append(names, pickedName(t, result))
		ends = append(ends, result.Done)
	}
	if names[0] == names[1] || names[1] == names[2] || names[0] == names[2] {
		t.Errorf("first three picks = %v, want each replica once", names[:3])
	}
	for i := 3; i < 6; i++ {
		if names[i] != names[i-3] {
			t.Errorf("picks = %v, want the same three replicas in the same order twice", names)
			break
		}
	}
	for i, replica := range p.replicas {
		if got := replica.inFlight.Load(); got != 2 {
			t.Errorf("calls counted on replica %d after 6 picks = %d, want 2", i, got)
		}
	}
	for _, end := range ends {
		end(balancer.DoneInfo{})
	}
	for i, replica := range p.replicas {
		if got := replica.inFlight.Load(); got != 0 {
			t.Errorf("calls counted on replica %d after every call ended = %d, want 0", i, got)
		}
	}

	allocations := testing.AllocsPerRun(1000, func() {
		result, err := p.Pick(balancer.PickInfo{})
		if err != nil {
			t.Fatal(err)
		}
		result.Done(balancer.DoneInfo{})
	})
	if allocations != 0 {
		t.Errorf("a pick and its end allocate %v times, want 0", allocations)
	}
}
