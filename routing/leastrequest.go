package routing

import (
	"encoding/json"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/endpointsharding"
	"google.golang.org/grpc/balancer/pickfirst"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
)

// leastRequestName is the balancer behind an engine's least_request. It
// replaces gRPC's least_request_experimental, which (as of grpc-go v1.85)
// draws replicas at random, so that with two replicas one pick in four of
// two draws lands on the busier one. Its picker also allocates once per
// draw and once more for the call's end: eleven allocations per call with
// ten draws, a few per cent of the gateway's CPU on small calls. This one
// looks at every ready replica and allocates nothing per pick.
const leastRequestName = "ssegw_least_request"

func init() {
	balancer.Register(leastRequestBuilder{})
}

type leastRequestBuilder struct{}

func (leastRequestBuilder) Name() string { return leastRequestName }

func (leastRequestBuilder) ParseConfig(raw json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	return leastRequestConfig{}, nil
}

type leastRequestConfig struct {
	serviceconfig.LoadBalancingConfig
}

// Build gives each replica (an endpoint, in gRPC's terms) a pick_first
// child, as gRPC's own balancers do, so that health and reconnection stay
// gRPC's.
func (leastRequestBuilder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	b := &leastRequestBalancer{ClientConn: cc, inFlight: resolver.NewEndpointMap[*atomic.Int32]()}
	b.child = endpointsharding.NewBalancer(b, opts, balancer.Get(pickfirst.Name).Build, endpointsharding.Options{})
	return b
}

// leastRequestBalancer sits between gRPC and the endpoint children: the
// children's subconnections pass through to gRPC, and their combined state
// comes back to UpdateState, which publishes a picker over the ready ones.
type leastRequestBalancer struct {
	balancer.ClientConn
	child balancer.Balancer

	mu sync.Mutex
	// inFlight counts the calls open on each ready replica. A counter
	// outlives the pickers that share it, so that calls picked by an
	// older picker still count.
	inFlight *resolver.EndpointMap[*atomic.Int32]
}

func (b *leastRequestBalancer) UpdateClientConnState(state balancer.ClientConnState) error {
	return b.child.UpdateClientConnState(balancer.ClientConnState{
		ResolverState: pickfirst.EnableHealthListener(state.ResolverState),
	})
}

func (b *leastRequestBalancer) ResolverError(err error) { b.child.ResolverError(err) }

// UpdateSubConnState is deprecated in gRPC's API; the children's
// subconnections report to their own listeners.
func (b *leastRequestBalancer) UpdateSubConnState(balancer.SubConn, balancer.SubConnState) {}

func (b *leastRequestBalancer) ExitIdle() { b.child.ExitIdle() }

func (b *leastRequestBalancer) Close() { b.child.Close() }

// UpdateState receives the children's combined state. With no ready
// replica, endpointsharding's own picker already decides whether calls
// wait or fail, so it is passed on unchanged.
func (b *leastRequestBalancer) UpdateState(state balancer.State) {
	var ready []endpointsharding.ChildState
	for _, child := range endpointsharding.ChildStatesFromPicker(state.Picker) {
		if child.State.ConnectivityState == connectivity.Ready {
			ready = append(ready, child)
		}
	}
	if len(ready) == 0 {
		b.ClientConn.UpdateState(state)
		return
	}

	b.mu.Lock()
	current := resolver.NewEndpointMap[*atomic.Int32]()
	p := &leastRequestPicker{replicas: make([]pickedReplica, len(ready))}
	for i, child := range ready {
		counter, ok := b.inFlight.Get(child.Endpoint)
		if !ok {
			counter = new(atomic.Int32)
		}
		current.Set(child.Endpoint, counter)
		p.replicas[i] = pickedReplica{
			picker:   child.State.Picker,
			inFlight: counter,
			done:     func(balancer.DoneInfo) { counter.Add(-1) },
		}
	}
	// Replicas that are not ready take no new calls; forgetting their
	// counters keeps the map to the replicas of the moment. Their open
	// calls end on the counters they hold.
	b.inFlight = current
	b.mu.Unlock()

	b.ClientConn.UpdateState(balancer.State{ConnectivityState: connectivity.Ready, Picker: p})
}

// leastRequestPicker picks the ready replica with the fewest calls open.
type leastRequestPicker struct {
	replicas []pickedReplica
}

type pickedReplica struct {
	picker   balancer.Picker
	inFlight *atomic.Int32
	// done ends a call on the replica; made once per picker, so that a
	// pick allocates nothing.
	done func(balancer.DoneInfo)
}

// Pick looks at every ready replica, from a random one on, and stops at
// the first without calls. Starting at random spreads calls over replicas
// with equal counts. Reading every counter is cheap for an engine's
// handful of replicas; with hundreds it would cost more than ten draws.
func (p *leastRequestPicker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	n := len(p.replicas)
	start := 0
	if n > 1 {
		start = rand.IntN(n)
	}
	best := &p.replicas[start]
	least := best.inFlight.Load()
	for i := 1; i < n && least > 0; i++ {
		r := &p.replicas[(start+i)%n]
		if open := r.inFlight.Load(); open < least {
			best, least = r, open
		}
	}
	result, err := best.picker.Pick(info)
	if err != nil {
		return result, err
	}
	best.inFlight.Add(1)
	if childDone := result.Done; childDone != nil {
		counter := best.inFlight
		result.Done = func(info balancer.DoneInfo) {
			counter.Add(-1)
			childDone(info)
		}
	} else {
		result.Done = best.done
	}
	return result, nil
}
