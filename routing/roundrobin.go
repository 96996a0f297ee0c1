package routing

import (
	"math/rand/v2"
	"sync/atomic"

	"google.golang.org/grpc/balancer"
)

// roundRobinName is the balancer behind an engine's round_robin. It picks
// as gRPC's round_robin does (as of grpc-go v1.85), and counts each
// replica's open calls, which gRPC's does not.
const roundRobinName = "ssegw_round_robin"

// roundRobinPicker takes the ready replicas in turn.
type roundRobinPicker struct {
	replicas []pickedReplica
	next     atomic.Uint32
}

// newRoundRobinPicker starts at a random replica, as gRPC's round_robin
// does, so that a picker published after each change of the ready
// replicas does not favour the first of them.
func newRoundRobinPicker(replicas []pickedReplica) balancer.Picker {
	p := &roundRobinPicker{replicas: replicas}
	p.next.Store(uint32(rand.IntN(len(replicas))))
	return p
}

func (p *roundRobinPicker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	next := p.next.Add(1)
	return p.replicas[next%uint32(len(p.replicas))].pick(info)
}
