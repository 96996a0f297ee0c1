package routing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"

	"github.com/ssegw/ssegw/ssepb"
)

// ProbeHeader marks the gateway's own GetCapabilities calls, so that a
// plugin's log, or a test, can tell them from Qlik's.
const ProbeHeader = "x-ssegw-probe"

// ReplicaState is what the last probe of a replica found.
type ReplicaState string

// recovering reports whether a replica in this state is probed every
// recoveryProbeInterval: it fails, or was never probed. A disagreeing
// replica responds to its probes, and a restart of it breaks its connection,
// which starts a probe at once, so probe_interval is often enough for it.
func (s ReplicaState) recovering() bool {
	return s == ReplicaFailing || s == ReplicaUnknown
}

// The states of a replica.
const (
	ReplicaUnknown     ReplicaState = "unknown"     // not probed yet
	ReplicaHealthy     ReplicaState = "healthy"     // answered GetCapabilities
	ReplicaFailing     ReplicaState = "failing"     // did not answer
	ReplicaDisagreeing ReplicaState = "disagreeing" // answered with other functions than the engine's
	ReplicaUnverified  ReplicaState = "unverified"  // answered with an error while other replicas list the engine's functions
)

// BUG(ssegw): A plugin that hangs while the gateway has calls open on it
// looks like a busy one, because its probes time out on a connection that
// stays up. It gets no new calls while another replica of its engine is
// fit for them. Alone, it keeps getting them until its calls end, as a
// direct connection would send them, and request_timeout bounds them.

// Replica is one backend of an engine, probed by calling its
// GetCapabilities on a connection of its own. Calls do not use that
// connection: they go through the engine's pool, so a probe never waits
// behind a call, and a call's balancing is gRPC's.
type Replica struct {
	// Immutable after construction.
	Address string
	backend int // index in the engine's backends
	engine  string
	// resolverAddress is how the engine's pool dials the replica.
	resolverAddress resolver.Address
	// kick wakes the probe loop for a probe now.
	kick   chan struct{}
	conn   *grpc.ClientConn
	logger *slog.Logger

	// inFlight counts the calls the engine's pool has open on the replica,
	// from the balancer's pick to the call's end. The balancers find it in
	// resolverAddress. A replica at the same address of the engine that a
	// reload put in place shares it, since the old engine's calls run on.
	inFlight *atomic.Int32

	mu           sync.Mutex         // guards the following
	stop         context.CancelFunc // ends the replica's probes; set when they start
	state        ReplicaState
	lastProbe    time.Time
	lastError    string
	capabilities *Capabilities
	// losses counts the calls of lost, so that a probe under way when the
	// connection broke does not undo what lost recorded.
	losses uint64
	// busy is set while the replica's probes time out with calls open on
	// it, so that this is logged once.
	busy bool
}

// ReplicaStatus is a copy of a replica's probe results, for display.
type ReplicaStatus struct {
	Address      string
	State        ReplicaState
	LastProbe    time.Time
	LastError    string
	Capabilities *Capabilities
	// Busy is true while the replica's probes time out as it serves calls:
	// it keeps its State, and gets new calls only while no other replica
	// can take them. A hung plugin looks the same.
	Busy bool
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
		Busy:         r.busy,
	}
}

// probe calls the replica's GetCapabilities once, records the result, and
// returns the capabilities it got, or nil. A change of state is logged
// once, with the reason.
func (r *Replica) probe(ctx context.Context, timeout time.Duration) *Capabilities {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, ProbeHeader, "1")
	r.mu.Lock()
	losses := r.losses
	r.mu.Unlock()
	message, err := ssepb.NewConnectorClient(r.conn).GetCapabilities(ctx, &ssepb.Empty{})
	now := time.Now()
	if err != nil && errors.Is(context.Cause(ctx), context.Canceled) {
		// The engine is closing, so the failed probe is no sign of the
		// replica's health.
		return nil
	}
	// The plugin may end the probe at its copy of the deadline a moment
	// before ctx ends, so the status alone tells that the probe timed out.
	timedOut := status.Code(err) == codes.DeadlineExceeded
	inFlight := r.inFlight.Load()
	connected := r.conn.GetState() == connectivity.Ready

	r.mu.Lock()
	defer r.mu.Unlock()
	previous := r.state
	r.lastProbe = now
	if timedOut && inFlight > 0 && connected && r.losses == losses {
		// A plugin that serves every call from a fixed pool of workers, as
		// a grpcio (Python) plugin does from its thread pool, answers a
		// probe only once a worker is free. While the gateway's calls keep
		// them all busy, the plugin queues new calls as it queues the
		// probe, so the replica stays as it was, and Engine.reconcile
		// sends it calls while no other replica can take them. See the
		// BUG note on Replica for a plugin that hangs instead.
		calls := "calls are"
		if inFlight == 1 {
			calls = "call is"
		}
		r.lastError = fmt.Sprintf("busy: no response to GetCapabilities within probe_timeout (%v) while %d %s open on it", timeout, inFlight, calls)
		if !r.busy {
			r.busy = true
			r.logger.Warn("replica busy: its probe timed out while it serves calls; it gets new calls only while no other replica can take them",
				"engine", r.engine, "backend", r.Address, "calls_in_flight", inFlight, "error", err.Error())
		}
		return nil
	}
	if r.busy {
		r.busy = false
		if err == nil || !unreachable(err) {
			// Otherwise nothing would tell that the warning is over when
			// the replica stays in its state, or why it gets calls again.
			// A replica that did not answer is logged as failing below.
			r.logger.Info("replica no longer busy: it responded to its probe", "engine", r.engine, "backend", r.Address)
		}
	}
	if err != nil && unreachable(err) {
		r.state, r.lastError = ReplicaFailing, err.Error()
		if previous != ReplicaFailing {
			r.logger.Warn("replica failing", "engine", r.engine, "backend", r.Address, "error", err.Error())
		}
		return nil
	}
	if r.losses != losses {
		// The connection broke while the probe was under way, so the
		// response may come from the process that is gone. The probe that
		// watchConnection starts after lost decides.
		return nil
	}
	if err != nil {
		// The plugin answered, so it serves calls, but with an error: its
		// functions stay unknown, and Qlik cannot learn them either. The
		// engine decides whether it gets calls; see Engine.reconcile.
		if previous == ReplicaUnverified {
			r.lastError, r.capabilities = err.Error(), nil
			return nil
		}
		if previous != ReplicaHealthy || r.lastError == "" {
			r.logger.Warn("replica answers GetCapabilities with an error; its functions are unknown",
				"engine", r.engine, "backend", r.Address, "error", err.Error())
		}
		r.state, r.lastError, r.capabilities = ReplicaHealthy, err.Error(), nil
		return nil
	}
	capabilities := NewCapabilities(message, now)
	if previous == ReplicaDisagreeing && r.capabilities != nil && r.capabilities.key() == capabilities.key() {
		// Still the same other functions: the engine decides again.
		r.capabilities = capabilities
		return capabilities
	}
	r.state, r.lastError = ReplicaHealthy, ""
	r.capabilities = capabilities
	if previous != ReplicaHealthy {
		r.logger.Info("replica healthy", "engine", r.engine, "backend", r.Address,
			"plugin", message.GetPluginIdentifier(), "functions", len(message.GetFunctions()))
	}
	return r.capabilities
}

// unreachable reports whether a probe's error means the replica did not
// answer: the connection failed, or the answer did not come in time. Any
// other status is the plugin's own answer. A probe that timed out while the
// replica is busy with the gateway's calls is handled before this check.
func unreachable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return true
	}
	return false
}

// lastCapabilities returns the capabilities the replica returned last, or
// nil, and whether it responded to its last probe. A replica that is
// down keeps what it returned before, even after lost.
func (r *Replica) lastCapabilities() (capabilities *Capabilities, answered bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.capabilities, r.state == ReplicaHealthy || r.state == ReplicaDisagreeing
}

// healthyCapabilities returns the capabilities of a replica that answered
// its last probe, or nil.
func (r *Replica) healthyCapabilities() *Capabilities {
	capabilities, answered := r.lastCapabilities()
	if !answered {
		return nil
	}
	return capabilities
}

// disagree marks a replica whose functions or allowScript differ from the
// engine's agreed set, and warns once with the differing function ids, or
// about allowScript when only that differs.
func (r *Replica) disagree(agreed *Capabilities) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state == ReplicaDisagreeing {
		return
	}
	r.state = ReplicaDisagreeing
	r.lastError = r.capabilities.differenceFrom(agreed)
	differing := r.capabilities.differingFunctions(agreed)
	allowScript := r.capabilities.Message.GetAllowScript()
	attrs := []any{"engine", r.engine, "backend", r.Address}
	if allowScript != agreed.Message.GetAllowScript() {
		attrs = append(attrs, "allow_script", allowScript)
	}
	if len(differing) == 0 {
		r.logger.Warn("replica gets no calls: its allowScript differs from the engine's", attrs...)
		return
	}
	r.logger.Warn("replica gets no calls: its functions differ from the engine's, so a function id could mean another function there",
		append(attrs, "function_ids", differing)...)
}

// agree clears the mark of disagree once the replica's functions are the
// engine's again.
func (r *Replica) agree() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state != ReplicaDisagreeing {
		return
	}
	r.state, r.lastError = ReplicaHealthy, ""
	r.logger.Info("replica healthy: its functions are the engine's again", "engine", r.engine, "backend", r.Address)
}

// continueFrom makes a new replica go on where previous, the same backend
// at the same address in the engine that a reload replaced, stands: with
// its probe results, so that the new engine's first vote and pool are the
// old engine's until the replica's first probe. Without them, a busy
// replica would have no vote, and a replica with other functions would
// set the engine's list.
func (r *Replica) continueFrom(previous *Replica) {
	previous.mu.Lock()
	defer previous.mu.Unlock()
	r.state, r.lastProbe, r.lastError = previous.state, previous.lastProbe, previous.lastError
	r.capabilities, r.busy = previous.capabilities, previous.busy
}

// isBusy reports whether the replica's last probe timed out while calls
// were open on it.
func (r *Replica) isBusy() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.busy
}

// answeredWithError reports whether the plugin answered the replica's last
// probe with an error status, so that its functions are unknown.
func (r *Replica) answeredWithError() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.capabilities == nil && (r.state == ReplicaHealthy || r.state == ReplicaUnverified)
}

// unverify marks a replica whose GetCapabilities fails while other
// replicas list the engine's functions, and warns once.
func (r *Replica) unverify() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state == ReplicaUnverified {
		return
	}
	r.state = ReplicaUnverified
	r.logger.Warn("replica gets no calls: GetCapabilities failed, so its functions cannot be compared with the engine's",
		"engine", r.engine, "backend", r.Address, "error", r.lastError)
}

// trustUnverified clears the mark of unverify once no other replica lists
// the engine's functions: the replica is then the engine's only way to
// serve calls, as a lone replica whose GetCapabilities fails is.
func (r *Replica) trustUnverified() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state != ReplicaUnverified {
		return
	}
	r.state = ReplicaHealthy
	r.logger.Info("replica gets calls again though GetCapabilities fails: no other replica lists the engine's functions",
		"engine", r.engine, "backend", r.Address, "error", r.lastError)
}

// lost marks a replica whose connection broke: it may come back as another
// process, with other functions, so it gets no calls until a probe has
// checked it again.
func (r *Replica) lost() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.losses++
	if r.state == ReplicaFailing {
		return
	}
	r.state, r.lastError = ReplicaFailing, "connection lost; probing before it gets calls again"
	r.logger.Warn("replica lost its connection", "engine", r.engine, "backend", r.Address)
}

// probeNow wakes the replica's probe loop.
func (r *Replica) probeNow() {
	select {
	case r.kick <- struct{}{}:
	default: // a probe is due already
	}
}
