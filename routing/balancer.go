package routing

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sync/atomic"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/endpointsharding"
	"google.golang.org/grpc/balancer/pickfirst"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
)

// The balancers behind an engine's balancer key. Both count the calls open
// on each replica in the replica's own counter, which the least_request
// picker compares and the probes read to tell a busy replica from a
// failing one. gRPC's round_robin (as of grpc-go v1.85) exposes no count of
// a replica's open calls, so round_robin is one of these too.
var (
	leastRequestBuilder = replicaBalancerBuilder{name: leastRequestName, newPicker: newLeastRequestPicker}
	roundRobinBuilder   = replicaBalancerBuilder{name: roundRobinName, newPicker: newRoundRobinPicker}
)

func init() {
	balancer.Register(leastRequestBuilder)
	balancer.Register(roundRobinBuilder)
}

// inFlightKey is the resolver address attribute that holds a replica's
// count of open calls, an *atomic.Int32.
type inFlightKey struct{}

// withInFlight adds counter to addr, for the balancers to count the
// replica's calls in.
func withInFlight(addr resolver.Address, counter *atomic.Int32) resolver.Address {
	addr.Attributes = addr.Attributes.WithValue(inFlightKey{}, counter)
	return addr
}

// inFlightOf returns the count of open calls that withInFlight added to
// addresses, or nil if it added none.
func inFlightOf(addresses []resolver.Address) *atomic.Int32 {
	if len(addresses) == 0 {
		return nil
	}
	counter, _ := addresses[0].Attributes.Value(inFlightKey{}).(*atomic.Int32)
	return counter
}

type replicaBalancerBuilder struct {
	name string
	// newPicker makes the picker over the ready replicas.
	newPicker func([]pickedReplica) balancer.Picker
}

func (b replicaBalancerBuilder) Name() string { return b.name }

// ParseConfig accepts only an empty object: the balancer has no settings.
func (b replicaBalancerBuilder) ParseConfig(raw json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	decoder := json.NewDecoder(bytes.NewReader(raw))
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(&struct{}{}); err != nil {
		return nil, fmt.Errorf("%s: %w", b.name, err)
	}
	return replicaBalancerConfig{}, nil
}

type replicaBalancerConfig struct {
	serviceconfig.LoadBalancingConfig
}

// Build gives each replica (an endpoint, in gRPC's terms) a pick_first
// child, as gRPC's own balancers do, so that health and reconnection stay
// gRPC's.
func (b replicaBalancerBuilder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	rb := &replicaBalancer{ClientConn: cc, newPicker: b.newPicker}
	rb.child = endpointsharding.NewBalancer(rb, opts, balancer.Get(pickfirst.Name).Build, endpointsharding.Options{})
	return rb
}

// replicaBalancer sits between gRPC and the endpoint children: the
// children's subconnections pass through to gRPC, and their combined state
// comes back to UpdateState, which publishes a picker over the ready ones.
type replicaBalancer struct {
	balancer.ClientConn
	child     balancer.Balancer
	newPicker func([]pickedReplica) balancer.Picker
}

func (b *replicaBalancer) UpdateClientConnState(state balancer.ClientConnState) error {
	return b.child.UpdateClientConnState(balancer.ClientConnState{
		ResolverState: pickfirst.EnableHealthListener(state.ResolverState),
	})
}

func (b *replicaBalancer) ResolverError(err error) { b.child.ResolverError(err) }

// UpdateSubConnState is deprecated in gRPC's API; the children's
// subconnections report to their own listeners.
func (b *replicaBalancer) UpdateSubConnState(balancer.SubConn, balancer.SubConnState) {}

func (b *replicaBalancer) ExitIdle() { b.child.ExitIdle() }

func (b *replicaBalancer) Close() { b.child.Close() }

// UpdateState receives the children's combined state. With no ready
// replica, endpointsharding's own picker already decides whether calls
// wait or fail, so it is passed on unchanged.
func (b *replicaBalancer) UpdateState(state balancer.State) {
	var ready []pickedReplica
	for _, child := range endpointsharding.ChildStatesFromPicker(state.Picker) {
		if child.State.ConnectivityState != connectivity.Ready {
			continue
		}
		// The replica's counter outlives the pickers that share it, so a
		// replica that reconnects, or comes back to the resolver's list,
		// still counts the calls it serves. Every endpoint of Pool.Use has
		// one. A counter made here counts only while this picker is in use.
		counter := inFlightOf(child.Endpoint.Addresses)
		if counter == nil {
			counter = new(atomic.Int32)
		}
		ready = append(ready, pickedReplica{
			picker:   child.State.Picker,
			inFlight: counter,
			done:     func(balancer.DoneInfo) { counter.Add(-1) },
		})
	}

	if len(ready) == 0 {
		b.ClientConn.UpdateState(state)
		return
	}
	b.ClientConn.UpdateState(balancer.State{ConnectivityState: connectivity.Ready, Picker: b.newPicker(ready)})
}

// pickedReplica is a ready replica as a picker sees it.
type pickedReplica struct {
	picker   balancer.Picker
	inFlight *atomic.Int32
	// done ends a call on the replica; made once per picker, so that a
	// pick allocates nothing.
	done func(balancer.DoneInfo)
}

// pick takes the replica's child pick and counts the call on the replica
// until its end.
func (r *pickedReplica) pick(info balancer.PickInfo) (balancer.PickResult, error) {
	result, err := r.picker.Pick(info)
	if err != nil {
		return result, err
	}
	r.inFlight.Add(1)
	if childDone := result.Done; childDone != nil {
		counter := r.inFlight
		result.Done = func(info balancer.DoneInfo) {
			counter.Add(-1)
			childDone(info)
		}
	} else {
		result.Done = r.done
	}
	return result, nil
}

var (
	_ balancer.Builder      = replicaBalancerBuilder{}
	_ balancer.ConfigParser = replicaBalancerBuilder{}
)
