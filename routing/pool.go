package routing

import (
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/ssegw/ssegw/config"
)

// reconnectBackoff bounds how long a restarted plugin waits to be used
// again. gRPC's default backoff grows to two minutes between attempts,
// which would keep a plugin that restarted quickly out of rotation for
// that long; a few seconds costs one cheap dial per replica that stays
// down.
var reconnectBackoff = grpc.ConnectParams{
	Backoff: backoff.Config{
		BaseDelay:  250 * time.Millisecond,
		Multiplier: 1.6,
		Jitter:     0.2,
		MaxDelay:   3 * time.Second,
	},
	MinConnectTimeout: 5 * time.Second,
}

// Pool is the set of replicas of one engine, behind one gRPC client
// connection. gRPC's resolver lists the replicas and the engine's balancer
// picks a ready one for each call, so calls from one Qlik connection spread
// over all replicas.
type Pool struct {
	conn     *grpc.ClientConn
	resolver *manual.Resolver

	// mu keeps ResetBackoff apart from Use and Close. gRPC's
	// ResetConnectBackoff (as of grpc-go v1.85) walks the connection's map
	// of subconnections without holding its lock, while a resolver update
	// adds and removes entries. A map read during a write stops the whole
	// process with a fatal error, which no recover catches. Use returns
	// only after the balancer made its changes, and idle mode, which would
	// change the map on its own, is off.
	mu sync.Mutex
}

// PoolOptions are the settings shared by every pool of a gateway.
type PoolOptions struct {
	Limits    config.Limits
	Keepalive config.Keepalive
	UserAgent string

	// DialOptions are added last, so they can override the above.
	DialOptions []grpc.DialOption
}

// NewPool starts connecting to the engine's backends; unreachable plugins
// are retried in the background.
// Use gives it the replicas to call.
func NewPool(engine *config.Engine, opts PoolOptions) (*Pool, error) {
	r := manual.NewBuilderWithScheme("ssegw")
	r.InitialState(resolver.State{})

	dialOptions := []grpc.DialOption{
		grpc.WithResolvers(r),
		grpc.WithTransportCredentials(transportCredentials(engine)),
		grpc.WithDefaultServiceConfig(serviceConfig(engine)),
		grpc.WithConnectParams(reconnectBackoff),
		// Without idle mode, connections stay up between calls, so the
		// first call after a quiet half hour pays no dial, and the
		// subconnections change only in Use.
		grpc.WithIdleTimeout(0),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:    opts.Keepalive.BackendPingInterval,
			Timeout: 20 * time.Second,
			// Pinging idle connections would earn GOAWAY from plugins
			// with gRPC's default policy, which forbids it.
			PermitWithoutStream: false,
		}),
		// The call path checks the plugin's headers against
		// max_header_list_size itself; see HeaderListCeiling.
		grpc.WithMaxHeaderListSize(opts.Limits.HeaderListCeiling()),
		// A fixed window, unlike gRPC's default that grows with the
		// measured bandwidth, bounds what a plugin sends ahead of Qlik.
		grpc.WithInitialWindowSize(int32(opts.Limits.StreamWindow)),
		grpc.WithInitialConnWindowSize(int32(opts.Limits.ConnWindow())),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(int(opts.Limits.MaxMessageSize)),
			grpc.MaxCallSendMsgSize(int(opts.Limits.MaxMessageSize)),
		),
	}
	if opts.UserAgent != "" {
		dialOptions = append(dialOptions, grpc.WithUserAgent(opts.UserAgent))
	}
	dialOptions = append(dialOptions, opts.DialOptions...)

	conn, err := grpc.NewClient("ssegw:///"+engine.Name, dialOptions...)
	if err != nil {
		return nil, fmt.Errorf("engine %s: creating client connection: %w", engine.Name, err)
	}
	// Connect now rather than on the first call, so that the first call
	// of a Qlik sheet does not pay for the dial and the TLS handshake.
	conn.Connect()
	return &Pool{conn: conn, resolver: r}, nil
}

// serviceConfig selects the engine's balancer: the gateway's round_robin
// (roundrobin.go), or its least_request (leastrequest.go), which picks the
// ready replica with the fewest calls in flight. Both count each replica's
// calls in flight (balancer.go).
func serviceConfig(engine *config.Engine) string {
	policy := `{"` + roundRobinName + `": {}}`
	if engine.Balancer == config.BalancerLeastRequest {
		policy = `{"` + leastRequestName + `": {}}`
	}
	if engine.MaxInFlight > 0 {
		policy = fmt.Sprintf(`{%q: {"maxInFlight": %d, "childPolicy": [%s]}}`, cappedName, engine.MaxInFlight, policy)
	}
	return `{"loadBalancingConfig": [` + policy + `]}`
}

// Use makes the pool send new calls only to the given replicas. Calls open
// on a replica left out run to their end.
func (p *Pool) Use(replicas []*Replica) {
	p.mu.Lock()
	defer p.mu.Unlock()
	addresses := make([]resolver.Address, len(replicas))
	for i, replica := range replicas {
		addresses[i] = replica.resolverAddress
	}
	p.resolver.UpdateState(stateOf(addresses))
}

// transportCredentials returns plaintext credentials for an engine whose
// backends all are plaintext, else credentials that choose per backend.
// gRPC sends :scheme https on every connection of credentials that
// describe themselves as TLS (as of grpc-go v1.85), so an engine that mixes
// both sends https to its plaintext plugins too. gRPC servers do not check
// the scheme.
func transportCredentials(engine *config.Engine) credentials.TransportCredentials {
	for _, backend := range engine.Backends {
		if backend.TLS != nil {
			return newBackendCredentials()
		}
	}
	return insecure.NewCredentials()
}

// stateOf lists addresses for gRPC, one endpoint each.
func stateOf(addresses []resolver.Address) resolver.State {
	state := resolver.State{Endpoints: make([]resolver.Endpoint, len(addresses))}
	for i, addr := range addresses {
		state.Endpoints[i] = resolver.Endpoint{Addresses: []resolver.Address{addr}}
	}
	return state
}

// Conn returns the client connection that reaches the engine's replicas.
func (p *Pool) Conn() *grpc.ClientConn {
	return p.conn
}

// ResetBackoff makes the connections that wait out their reconnect backoff
// try again now.
func (p *Pool) ResetBackoff() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conn.ResetConnectBackoff()
}

// Close closes the connections to every replica; calls still open on them
// fail.
func (p *Pool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conn.Close()
}
