package routing

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/ssegw/ssegw/ssepb"
)

// ProbeHeader marks the gateway's own GetCapabilities calls, so that a
// plugin's log, or a test, can tell them from Qlik's.
const ProbeHeader = "x-ssegw-probe"

// ReplicaState is what the last probe of a replica found.
type ReplicaState string

// The states of a replica.
const (
	ReplicaUnknown ReplicaState = "unknown" // not probed yet
	ReplicaHealthy ReplicaState = "healthy" // answered GetCapabilities
	ReplicaFailing ReplicaState = "failing" // did not answer
)

// Replica is one backend of an engine, probed by calling its
// GetCapabilities on a connection of its own. Calls do not use that
// connection: they go through the engine's pool, so a probe never waits
// behind a call, and a call's balancing is gRPC's.
type Replica struct {
	// Immutable after construction.
	Address string
	engine  string
	conn    *grpc.ClientConn
	logger  *slog.Logger

	mu           sync.Mutex // guards the following
	state        ReplicaState
	lastProbe    time.Time
	lastError    string
	capabilities *Capabilities
}

// ReplicaStatus is a copy of a replica's probe results, for display.
type ReplicaStatus struct {
	Address      string
	State        ReplicaState
	LastProbe    time.Time
	LastError    string
	Capabilities *Capabilities
}

// Status returns the replica's current probe results.
func (r *Replica) Status() ReplicaStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return ReplicaStatus{
		Address:      r.Address,
		State:        r.state,
		LastProbe:    r.lastProbe,
		LastError:    r.lastError,
		Capabilities: r.capabilities,
	}
}

// probe calls the replica's GetCapabilities once, records the result, and
// returns the capabilities it got, or nil. A change of state is logged
// once, with the reason.
func (r *Replica) probe(ctx context.Context, timeout time.Duration) *Capabilities {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, ProbeHeader, "1")
	message, err := ssepb.NewConnectorClient(r.conn).GetCapabilities(ctx, &ssepb.Empty{})
	now := time.Now()

	r.mu.Lock()
	defer r.mu.Unlock()
	previous := r.state
	r.lastProbe = now
	if err != nil {
		r.state, r.lastError = ReplicaFailing, err.Error()
		if previous != ReplicaFailing {
			r.logger.Warn("replica failing", "engine", r.engine, "backend", r.Address, "error", err.Error())
		}
		return nil
	}
	r.state, r.lastError = ReplicaHealthy, ""
	r.capabilities = NewCapabilities(message, now)
	if previous != ReplicaHealthy {
		r.logger.Info("replica healthy", "engine", r.engine, "backend", r.Address,
			"plugin", message.GetPluginIdentifier(), "functions", len(message.GetFunctions()))
	}
	return r.capabilities
}
