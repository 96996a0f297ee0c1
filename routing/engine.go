package routing

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/ssepb"
	"github.com/ssegw/ssegw/tlsutil"
)

// recoveryProbeInterval is how often a replica that is failing, or not
// probed successfully yet, is probed: often, so that a restarted plugin is
// back in rotation within about a second, whatever probe_interval says.
const recoveryProbeInterval = time.Second

// Engine is one configured engine: the pool its calls go through, the
// probes of each of its replicas, and its agreed capabilities.
type Engine struct {
	// Immutable after NewEngine.
	Name     string
	Config   *config.Engine
	Pool     *Pool
	logger   *slog.Logger
	stateDir string
	options  EngineOptions
	// sourceOf holds each backend's TLS source, nil for plaintext.
	sourceOf []*tlsutil.Source
	// predecessors holds the replicas of the engine this one replaced, by
	// address, with their backends' settings. A replica at the same
	// address shares their count of open calls. With the same settings, it
	// also continues their probe results.
	predecessors map[string]predecessor

	// replicas is replaced as a whole when DNS discovery finds other
	// replicas, so readers need no lock.
	replicas atomic.Pointer[[]*Replica]

	// certificates reloads sources, the TLS files of the backends.
	certificates *tlsutil.Watcher
	sources      []*tlsutil.Source

	// capabilities is the engine's agreed function list, read on every
	// call without a lock.
	capabilities atomic.Pointer[Capabilities]
	// known is closed once capabilities is set, for those that wait for
	// it; see knownSignal.
	known               chan struct{}
	knownMade, knownSet sync.Once

	// waiting counts the calls waiting for a replica, up to max_waiting.
	waiting atomic.Int64

	// members are the engines a merged engine merges; set by NewTable, as
	// a reload may replace them.
	members atomic.Pointer[[]*Engine]

	// replaced ends when Drain begins, so that calls still waiting for a
	// replica can move to the engine that replaced this one.
	replaced     context.Context
	markReplaced context.CancelFunc

	// cut ends, with the cause of Drain's context, when Drain stops
	// waiting for the engine's calls, so that they can end with that
	// reason rather than with the error of a closed connection.
	cut      context.Context
	cutCalls context.CancelCauseFunc

	// callsMu guards the following. Every call takes it twice, so it is
	// apart from mu, which reconcile holds while it writes the state file.
	callsMu  sync.Mutex
	inFlight int           // calls under way, so that Drain can tell when it is idle
	draining bool          // Drain has begun, so Track rejects new calls
	idle     chan struct{} // closed when inFlight drops to 0 during Drain

	mu       sync.Mutex // guards the following
	eligible []string   // addresses of the replicas the pool uses
	// agreedKey is the key of the list the probes last agreed on, which
	// was logged, once agreedSet; an empty list has the key "". A list
	// that a forwarded GetCapabilities response set, or that came from the
	// state folder, was not. agreedStored reports whether the state
	// folder has it.
	agreedKey    string
	agreedSet    bool
	agreedStored bool

	stopProbes context.CancelFunc
	probesDone sync.WaitGroup
}

// EngineOptions are the settings of every engine of a gateway.
type EngineOptions struct {
	PoolOptions
	Logger *slog.Logger

	// StateDir is where the engine's capabilities are kept across
	// restarts; empty keeps them in memory only.
	StateDir string

	// Certificates, when not nil, reloads the backends' TLS files when
	// they change.
	Certificates *tlsutil.Watcher

	// Cut, when not nil, is the parent of the engine's Cut: when it ends,
	// the engine's calls end with its cause too, as when the gateway stops.
	Cut context.Context

	// Replaces is the engine of the same name that a reload replaces
	// with this one, or nil. Its calls in flight count on each replica at
	// the same address, so that the probes can tell a busy replica from a
	// failing one. With the same backends, the new engine also starts with
	// its capabilities (see inherit).
	Replaces *Engine
}

// NewEngine starts connecting to an engine's replicas, for calls and for
// probes, and loads its capabilities from the state folder. Call Start to
// begin probing and Close to end everything.
func NewEngine(cfg *config.Engine, opts EngineOptions) (*Engine, error) {
	// Load each TLS backend's files once, for its calls and its probes.
	sources := make([]*tlsutil.Source, len(cfg.Backends))
	for i, backend := range cfg.Backends {
		if backend.TLS == nil {
			continue
		}
		source, err := tlsutil.NewClientSource(fmt.Sprintf("engines.%s.backends[%d].tls", cfg.Name, i), backend.TLS.Files(), backend.ServerName())
		if err != nil {
			return nil, fmt.Errorf("engines.%s.backends[%d].tls: %w", cfg.Name, i, err)
		}
		sources[i] = source
	}

	pool, err := NewPool(cfg, opts.PoolOptions)
	if err != nil {
		return nil, err
	}
	e := &Engine{Name: cfg.Name, Config: cfg, Pool: pool, stateDir: opts.StateDir,
		certificates: opts.Certificates, options: opts, sourceOf: sources}
	e.logger = slog.New(&replacedHandler{Handler: opts.Logger.Handler(), engine: e})
	e.replaced, e.markReplaced = context.WithCancel(context.Background())
	cutParent := opts.Cut
	if cutParent == nil {
		cutParent = context.Background()
	}
	e.cut, e.cutCalls = context.WithCancelCause(cutParent)
	for _, source := range sources {
		if source != nil && e.certificates != nil {
			e.certificates.Add(source)
			e.sources = append(e.sources, source)
		}
	}

	if opts.Replaces != nil {
		e.predecessors = map[string]predecessor{}
		for _, replica := range opts.Replaces.Replicas() {
			e.predecessors[replica.Address] = predecessor{replica, opts.Replaces.Config.Backends[replica.backend]}
		}
	}

	// Backends with fixed addresses are replicas now; DNS backends get
	// theirs when Start resolves them.
	var replicas []*Replica
	for i, backend := range cfg.Backends {
		if backend.DNS {
			continue
		}
		replica, err := e.newReplica(i, backend.Address)
		if err != nil {
			closeReplicas(replicas)
			e.Close()
			return nil, err
		}
		replicas = append(replicas, replica)
	}
	e.replicas.Store(&replicas)
	// Replicas continued from the engine a reload replaced keep its view
	// of them; new ones count as fit until their first probe, as before.
	eligible := yieldBusy(slices.DeleteFunc(slices.Clone(replicas), func(r *Replica) bool { return !e.fitForCalls(r) }))
	e.eligible = addressesOf(eligible)
	e.Pool.Use(eligible)
	if inherited := e.inheritable(opts.Replaces); inherited != nil {
		// The replaced engine's capabilities are those it stored in the
		// state folder, or newer.
		e.setCapabilities(inherited)
		e.logger.Info("capabilities kept from the engine the reload replaced", "engine", e.Name,
			"functions", len(inherited.Message.GetFunctions()), "fetched", inherited.Fetched)
		e.warnUnknownPolicies(inherited)
	} else if stored, err := loadCapabilities(e.stateDir, e.Name); err != nil {
		e.logger.Warn("reading stored capabilities failed; waiting for a replica", "engine", e.Name, "error", err.Error())
	} else if stored != nil {
		e.setCapabilities(stored)
		e.logger.Info("capabilities loaded from the state folder", "engine", e.Name,
			"functions", len(stored.Message.GetFunctions()), "fetched", stored.Fetched)
		e.warnUnknownPolicies(stored)
	}
	e.options.Replaces = nil // not kept alive by the engine that replaced it
	return e, nil
}

// newReplica makes the replica at address of backend i, with a connection
// of its own for probes.
func (e *Engine) newReplica(backend int, address string) (*Replica, error) {
	source := e.sourceOf[backend]
	var creds credentials.TransportCredentials = insecure.NewCredentials()
	if source != nil {
		creds = newTLSCredentials(source)
	}
	dialOptions := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithConnectParams(reconnectBackoff),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(int(e.options.Limits.MaxMessageSize))),
		// An idle probe connection must stay up: its loss means the
		// replica's loss, which watchConnection acts on.
		grpc.WithIdleTimeout(0),
	}
	if e.options.UserAgent != "" {
		dialOptions = append(dialOptions, grpc.WithUserAgent(e.options.UserAgent))
	}
	conn, err := grpc.NewClient("passthrough:///"+address, dialOptions...)
	if err != nil {
		return nil, fmt.Errorf("engines.%s.backends[%d]: %w", e.Name, backend, err)
	}
	replica := &Replica{
		Address:  address,
		backend:  backend,
		engine:   e.Name,
		conn:     conn,
		logger:   e.logger,
		state:    ReplicaUnknown,
		kick:     make(chan struct{}, 1),
		inFlight: new(atomic.Int32),
	}
	if previous, ok := e.predecessors[address]; ok {
		// Once only: a DNS address found again later is another replica.
		delete(e.predecessors, address)
		// The calls open at the address are the same either way. Other TLS
		// settings may reach another plugin there, or fail, so only the
		// same settings continue what the probes found.
		replica.inFlight = previous.replica.inFlight
		if reflect.DeepEqual(previous.backend, e.Config.Backends[backend]) {
			replica.continueFrom(previous.replica)
		}
	}
	// The plugin sees the configured address as :authority, as it would on
	// a direct connection from Qlik, also when it is one of the addresses a
	// DNS name resolves to.
	resolverAddress := withSecurity(resolver.Address{Addr: address, ServerName: e.Config.Backends[backend].Address}, source)
	replica.resolverAddress = withInFlight(resolverAddress, replica.inFlight)
	return replica, nil
}

// predecessor is a replica of the engine that a reload replaced, with the
// settings of its backend.
type predecessor struct {
	replica *Replica
	backend config.Backend
}

// Replicas returns the engine's replicas as they are now.
func (e *Engine) Replicas() []*Replica {
	if replicas := e.replicas.Load(); replicas != nil {
		return *replicas
	}
	return nil
}

// Start probes every replica now and then regularly, and resolves DNS
// backends, until Close.
func (e *Engine) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	e.stopProbes = cancel
	for _, replica := range e.Replicas() {
		e.startProbes(ctx, replica)
	}
	for i, backend := range e.Config.Backends {
		if backend.DNS {
			e.probesDone.Go(func() {
				e.discoverLoop(ctx, i)
			})
		}
	}
}

// startProbes runs a replica's probe loop until ctx or the replica's own
// context ends.
func (e *Engine) startProbes(ctx context.Context, replica *Replica) {
	replicaCtx, cancel := context.WithCancel(ctx)
	replica.mu.Lock()
	replica.stop = cancel
	replica.mu.Unlock()
	e.probesDone.Go(func() {
		e.probeLoop(replicaCtx, replica)
	})
	e.probesDone.Go(func() {
		e.watchConnection(replicaCtx, replica)
	})
}

// watchConnection takes a replica out of the pool as soon as its probe
// connection breaks, and probes it again. The pool's connection breaks at
// the same moment, and would otherwise send calls to a restarted plugin,
// perhaps of another version, before its next probe.
func (e *Engine) watchConnection(ctx context.Context, replica *Replica) {
	state := replica.conn.GetState()
	for replica.conn.WaitForStateChange(ctx, state) {
		previous := state
		state = replica.conn.GetState()
		if previous == connectivity.Ready && state != connectivity.Ready {
			replica.lost()
			e.reconcile()
			replica.probeNow()
		}
	}
}

// probeLoop probes a replica every probe_interval while it responds, and
// every recoveryProbeInterval while it fails or was never probed.
func (e *Engine) probeLoop(ctx context.Context, replica *Replica) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-replica.kick:
			timer.Stop()
		}
		recovering := replica.Status().State.recovering()
		if recovering {
			// Reconnect now, not when the connection's backoff (up to 3s)
			// ends, so that this probe finds a plugin that came back. The
			// gRPC flaw that Pool.mu guards against cannot strike here:
			// with the passthrough resolver and idle mode off, the probe
			// connection's subconnection changes only when this
			// goroutine's first probe starts it.
			replica.conn.ResetConnectBackoff()
		}
		replica.probe(ctx, e.Config.ProbeTimeout)
		if ctx.Err() != nil {
			return
		}
		e.reconcile()
		if recovering && replica.Status().State == ReplicaHealthy {
			// The pool's connection to it may still wait out its backoff.
			e.Pool.ResetBackoff()
		}
		next := e.Config.ProbeInterval
		if replica.Status().State.recovering() {
			next = min(next, recoveryProbeInterval)
		}
		timer.Reset(next)
	}
}

// reconcile settles the engine's agreed capabilities from its replicas and
// points the pool at the replicas fit for calls: those not known to fail,
// and whose functions agree with the engine's. A replica with other
// functions could give a function id another meaning, so it gets no calls.
// Nor does one whose GetCapabilities fails while other replicas vote for
// the agreed functions (see settleCapabilities), since its own could
// differ. Without such votes, it is the engine's only way to serve calls,
// and it keeps them.
func (e *Engine) reconcile() {
	e.mu.Lock()
	defer e.mu.Unlock()
	replicas := e.Replicas()
	// A replica whose GetCapabilities fails gets calls only while no
	// replica that is up lists the engine's functions: withholding it
	// while those are down would fail calls that it can serve.
	vouched := e.settleCapabilities(replicas)

	// Mark replicas with other or unknown functions, and choose the pool's
	// backends.
	agreedSet := e.capabilities.Load()
	var eligible []*Replica
	for _, replica := range replicas {
		capabilities := replica.healthyCapabilities()
		switch {
		case capabilities != nil && agreedSet != nil:
			if capabilities.key() != agreedSet.key() {
				replica.disagree(agreedSet)
				continue
			}
			replica.agree()
		case replica.answeredWithError():
			if vouched {
				replica.unverify()
				continue
			}
			replica.trustUnverified()
		}
		if e.fitForCalls(replica) {
			eligible = append(eligible, replica)
		}
	}
	// A busy replica's probes time out while it serves calls. It may be
	// busy or hung, and the gateway cannot tell which, so it gets new
	// calls only while no other replica is fit for them: alone, it queues
	// them as a direct connection would.
	//
	// NOTE: "fit" ignores max_in_flight. Beside a replica at its limit, a
	// busy one stays out until its next probe answers, and calls wait for
	// room meanwhile. Each time a busy replica leaves the pool and comes
	// back, max_in_flight counts its calls from 0 on a new connection, so
	// the calls still open on the old one exceed the limit for a while.
	eligible = yieldBusy(eligible)
	if addresses := addressesOf(eligible); !slices.Equal(addresses, e.eligible) {
		e.eligible = addresses
		e.Pool.Use(eligible)
	}
}

// settleCapabilities makes the function list that most replicas vote for
// the engine's agreed one. A replica that responded to its last probe
// votes for the list it returned. A replica that is down votes for the agreed
// list if that is the list it returned last, so that the agreed list does
// not change while its replicas restart. Qlik keeps the function ids of
// the list it was given, and the gateway cannot tell which list that was,
// so the agreed list is the safe guess. Without that vote, a replica with
// other functions would be the majority while the others are down, its
// list would become the agreed one, and a tie would keep it once they are
// back. A down replica votes only for reconnect_buffer after its last
// response, the time the gateway holds calls for a restarting plugin: one
// that never comes back must not keep the engine on a list that no live
// replica serves. On a tie the agreed list stays, else the first
// replica's list wins. It reports whether a replica that answered its last
// probe, and is not busy, votes for the agreed list after settling: a
// replica that is down keeps the list, but serves no calls meanwhile, and
// a busy one may hang. The caller holds mu.
//
// The first time the votes choose a list, and at every change, it is
// logged and stored, also when it is the list that a forwarded
// GetCapabilities response or the state folder had set already.
//
// NOTE: a list loaded from the state folder has no votes until a replica
// returns it, so after a restart of the gateway the first replica to
// respond sets the list, whichever list Qlik has.
func (e *Engine) settleCapabilities(replicas []*Replica) (answeredVote bool) {
	current := e.capabilities.Load()
	now := time.Now()
	votes := map[string]int{}
	// first maps each list to the capabilities of the first replica that
	// returned it.
	first := map[string]*Capabilities{}
	// vouched holds the lists of replicas that answered their last probe
	// and are not busy: those that serve calls as they should.
	vouched := map[string]bool{}
	var order []string
	for _, replica := range replicas {
		capabilities, answered := replica.lastCapabilities()
		if capabilities == nil {
			continue
		}
		key := capabilities.key()
		if !answered && (current == nil || key != current.key() || now.Sub(capabilities.Fetched) > e.Config.ReconnectWait()) {
			continue
		}
		if _, ok := votes[key]; !ok {
			order = append(order, key)
		}
		votes[key]++
		if answered && first[key] == nil {
			first[key] = capabilities
		}
		if answered && !replica.isBusy() {
			vouched[key] = true
		}
	}

	// An empty list's key is "", so the first key in order starts the
	// count rather than "".
	agreed := ""
	for i, key := range order {
		switch {
		case i == 0, votes[key] > votes[agreed]:
			agreed = key
		case votes[key] == votes[agreed] && current != nil && key == current.key():
			agreed = key
		}
	}
	// When only replicas that are down voted for the agreed list, it is
	// the current list, and no response is newer.
	chosen := first[agreed]
	if chosen == nil {
		return false
	}
	if current == nil || current.key() != agreed {
		e.setCapabilities(chosen)
		e.warnUnknownPolicies(chosen)
	} else if chosen.Fetched.After(current.Fetched) {
		e.capabilities.Store(chosen) // same functions, fresher date
	}
	changed := !e.agreedSet || e.agreedKey != agreed
	if changed || !e.agreedStored {
		// Stored first, so that the file is there once the record is. A
		// write that failed is tried again at the next probe, and warned
		// about once per list.
		err := storeCapabilities(e.stateDir, e.Name, chosen)
		e.agreedStored = err == nil
		if err != nil && changed {
			e.logger.Warn("storing capabilities failed; trying again at each probe", "engine", e.Name, "error", err.Error())
		}
	}
	if changed {
		e.agreedKey, e.agreedSet = agreed, true
		e.logger.Info("capabilities agreed", "engine", e.Name, "functions", len(chosen.Message.GetFunctions()),
			"plugin", chosen.Message.GetPluginIdentifier(), "replicas", votes[agreed])
	}
	return vouched[agreed]
}

// warnUnknownPolicies warns about each function policy of the engine that
// names no function of capabilities: a misspelt name would otherwise
// leave its function on the engine's policy without a word.
func (e *Engine) warnUnknownPolicies(capabilities *Capabilities) {
	for name := range e.Config.Functions {
		known := slices.ContainsFunc(capabilities.Message.GetFunctions(), func(f *ssepb.FunctionDefinition) bool {
			return strings.EqualFold(f.GetName(), name)
		})
		if !known {
			e.logger.Warn("function policy names no function of the plugin; check its spelling", "engine", e.Name,
				"function", name, "functions", functionNames(capabilities))
		}
	}
}

func functionNames(capabilities *Capabilities) string {
	names := make([]string, 0, len(capabilities.Message.GetFunctions()))
	for _, f := range capabilities.Message.GetFunctions() {
		names = append(names, f.GetName())
	}
	return strings.Join(names, ", ")
}

// fitForCalls reports whether the pool may send calls to a replica whose
// functions do not differ from the engine's. A replica that was never
// probed is fit when it is a configured address, as every replica is when
// the gateway starts, so that the first calls need not wait for a probe.
// A replica that DNS found later is not: it may be a new version of the
// plugin, as in a rolling upgrade, so it waits for a probe to compare its
// functions with the engine's.
func (e *Engine) fitForCalls(replica *Replica) bool {
	switch replica.Status().State {
	case ReplicaHealthy:
		return true
	case ReplicaUnknown:
		// A DNS name may resolve to any process, so its replicas wait for
		// a probe.
		return !e.Config.Backends[replica.backend].DNS
	}
	return false
}

// yieldBusy returns replicas without the busy ones, unless every one is
// busy (see reconcile).
func yieldBusy(replicas []*Replica) []*Replica {
	if !slices.ContainsFunc(replicas, func(r *Replica) bool { return !r.isBusy() }) {
		return replicas
	}
	return slices.DeleteFunc(slices.Clone(replicas), (*Replica).isBusy)
}

func addressesOf(replicas []*Replica) []string {
	addresses := make([]string, len(replicas))
	for i, replica := range replicas {
		addresses[i] = replica.Address
	}
	return addresses
}

func closeReplicas(replicas []*Replica) {
	for _, replica := range replicas {
		replica.conn.Close()
	}
}

// Capabilities returns the engine's agreed function list, or nil before
// any replica answered and with none stored.
func (e *Engine) Capabilities() *Capabilities {
	return e.capabilities.Load()
}

// SetCapabilities records capabilities learnt outside the probes, from a
// GetCapabilities answer the gateway forwarded, when none are known yet.
// The next probe that agrees with them logs and stores them.
func (e *Engine) SetCapabilities(c *Capabilities) {
	if e.capabilities.CompareAndSwap(nil, c) {
		e.signalKnown()
		e.warnUnknownPolicies(c)
	}
}

// inheritable returns the capabilities that the engine takes from
// previous, the engine of the same name that a reload replaces with it, so
// that Qlik still learns the functions while every replica is down, or
// nil. Only an engine with the same backends takes them: other backends
// may lead to another plugin, whose function ids could mean other
// functions. A merged engine takes nothing: its capabilities are its
// members'.
//
// NOTE: the state folder keys capabilities by engine name alone, so an
// engine pointed at another plugin still answers Qlik from the old
// plugin's stored list while no new replica has answered.
func (e *Engine) inheritable(previous *Engine) *Capabilities {
	if previous == nil || e.Merged() || !sameBackends(e.Config.Backends, previous.Config.Backends) {
		return nil
	}
	return previous.Capabilities()
}

// sameBackends reports whether two engines' backends are the same plugins
// reached the same way: the same addresses with the same settings (DNS,
// TLS files and server name, since a proxy may route by the name), in any
// order.
func sameBackends(a, b []config.Backend) bool {
	byAddress := func(backends []config.Backend) []config.Backend {
		sorted := slices.Clone(backends)
		slices.SortFunc(sorted, func(x, y config.Backend) int { return strings.Compare(x.Address, y.Address) })
		return sorted
	}
	return reflect.DeepEqual(byAddress(a), byAddress(b))
}

// setCapabilities replaces the agreed function list.
func (e *Engine) setCapabilities(c *Capabilities) {
	e.capabilities.Store(c)
	e.signalKnown()
}

// knownSignal returns a channel closed once the engine has capabilities.
// It is made on first use, so that an Engine literal works too.
func (e *Engine) knownSignal() <-chan struct{} {
	e.knownMade.Do(func() { e.known = make(chan struct{}) })
	return e.known
}

func (e *Engine) signalKnown() {
	e.knownSignal() // makes the channel, if no waiter did
	e.knownSet.Do(func() { close(e.known) })
}

// Serving reports whether a replica is connected and fit for calls.
func (e *Engine) Serving() bool {
	return e.Pool.Conn().GetState() == connectivity.Ready
}

// Down reports whether the engine has no way to serve a call now, so that
// a call would wait for a plugin to come back.
func (e *Engine) Down() bool {
	switch e.Pool.Conn().GetState() {
	case connectivity.Ready:
		return false
	case connectivity.TransientFailure:
		// Every replica's connection failed, whatever the last probes
		// found.
		return true
	}
	// Idle or connecting, as at start: down only if no probe found a
	// replica healthy.
	for _, replica := range e.Replicas() {
		if replica.Status().State == ReplicaHealthy {
			return false
		}
	}
	return true
}

// Ready reports whether the engine can serve Qlik: a replica is connected,
// or its capabilities are known, so Qlik learns its functions.
func (e *Engine) Ready() bool {
	if e.Merged() {
		for _, member := range e.Members() {
			if !member.Ready() {
				return false
			}
		}
		return true
	}
	return e.Serving() || e.Capabilities() != nil
}

// PicksAtOnce reports whether a call opening a stream now finds a replica
// without waiting: one is ready, and no max_in_flight may make it full.
func (e *Engine) PicksAtOnce() bool {
	return e.Config.MaxInFlight == 0 && e.Pool.Conn().GetState() == connectivity.Ready
}

// BeginWait counts a call that opens a stream and may wait for a replica.
// It reports false, counting nothing, when max_waiting calls already
// wait. Each true result needs an EndWait.
func (e *Engine) BeginWait() bool {
	if e.waiting.Add(1) > int64(e.Config.MaxWaiting) {
		e.waiting.Add(-1)
		return false
	}
	return true
}

// EndWait ends what BeginWait counted.
func (e *Engine) EndWait() {
	e.waiting.Add(-1)
}

// Track counts a call on the engine until done is called, so that Drain
// can wait until the engine is idle. Once Drain has begun, it rejects the
// call and returns false, because the call belongs to the engine that
// replaced this one.
func (e *Engine) Track() (done func(), ok bool) {
	e.callsMu.Lock()
	if e.draining {
		e.callsMu.Unlock()
		return nil, false
	}
	e.inFlight++
	e.callsMu.Unlock()
	return func() {
		e.callsMu.Lock()
		defer e.callsMu.Unlock()
		e.inFlight--
		if e.inFlight == 0 && e.idle != nil {
			close(e.idle)
			e.idle = nil
		}
	}, true
}

// AfterReplaced calls f in its own goroutine once Drain has begun, unless
// stop is called first. A call waiting for a replica uses it to move to
// the engine that replaced this one.
func (e *Engine) AfterReplaced(f func()) (stop func() bool) {
	return context.AfterFunc(e.replaced, f)
}

// Cut returns a context that ends when Drain stops waiting for the
// engine's calls, with the cause of Drain's context, or when the Cut of
// EngineOptions ends, with its cause. A call ends itself with it, before
// Drain closes the connections under it.
func (e *Engine) Cut() context.Context {
	return e.cut
}

// cutGrace is how long the calls that Drain cuts get to end themselves
// before it closes their connections.
const cutGrace = 2 * time.Second

// Drain waits until the engine's calls have ended or ctx is done, then
// closes it. A reload uses it for engines it replaced. It returns the
// number of calls still open when ctx ended, which Cut ended.
func (e *Engine) Drain(ctx context.Context) (cut int) {
	e.callsMu.Lock()
	e.draining = true
	e.markReplaced()
	if e.inFlight > 0 {
		idle := make(chan struct{})
		e.idle = idle
		e.callsMu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
			e.callsMu.Lock()
			cut = e.inFlight
			e.callsMu.Unlock()
			e.cutCalls(context.Cause(ctx))
			grace := time.NewTimer(cutGrace)
			select {
			case <-idle:
			case <-grace.C:
			}
			grace.Stop()
		}
	} else {
		e.callsMu.Unlock()
	}
	e.Close()
	return cut
}

// Close stops the probes and closes every connection; calls still open
// fail.
func (e *Engine) Close() {
	for _, source := range e.sources {
		e.certificates.Remove(source)
	}
	if e.stopProbes != nil {
		e.stopProbes()
		e.probesDone.Wait()
	}
	closeReplicas(e.Replicas())
	if e.Pool != nil {
		e.Pool.Close()
	}
}
