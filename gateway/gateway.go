// Package gateway accepts Qlik's SSE calls on its listeners and forwards
// each one, frame by frame, to a plugin replica of the engine it belongs to.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/routing"
	"github.com/ssegw/ssegw/telemetry"
	"github.com/ssegw/ssegw/tlsutil"
)

// handshakeTimeout bounds a new connection's TLS handshake, so that a
// client that connects and sends nothing does not hold a goroutine and a
// descriptor for gRPC's default of two minutes.
const handshakeTimeout = 10 * time.Second

// Gateway is a running set of listeners and the engines they serve.
type Gateway struct {
	// Immutable after New.
	cfg       *config.Config
	logger    *slog.Logger
	listeners []*listener
	warnings  *warningLimiter
	// unsentWarnings limits the warnings about headers gRPC cannot send,
	// whose keys hold header names that clients choose: apart, a client
	// that fills it cannot hold back the other warnings.
	unsentWarnings *warningLimiter
	observer       *observer
	telemetry      *telemetry.Providers
	ownsTelemetry  bool // the gateway made telemetry, and shuts it down
	version        string
	userAgent      string
	certificates   *tlsutil.Watcher

	// stopBackground ends the certificate watch and expiry checks.
	stopBackground context.CancelFunc

	// Set by Start.
	admin   *adminServer
	started time.Time

	// routing is replaced as a whole when the configuration changes, so
	// calls read it without a lock. current is the configuration it came
	// from.
	routing atomic.Pointer[routes]
	current atomic.Pointer[config.Config]

	reloadMu sync.Mutex // serializes reloads, and Shutdown after them
	// stopping is set under reloadMu when Shutdown begins, so that no
	// reload follows. It also fails /readyz, because a load balancer
	// should send no new call while the calls in flight finish.
	stopping atomic.Bool

	// retiring counts the engines that reloads replaced and that are still
	// draining. Shutdown waits for them, so that none of their probes or
	// connections outlives it. Once the listeners have stopped, Shutdown
	// cancels retireCtx, which ends the engines' wait for their calls.
	retiring   sync.WaitGroup
	retireCtx  context.Context
	stopRetire context.CancelFunc

	// handshakeFailures counts failed TLS handshakes, indexed like
	// tlsutil.HandshakeFailures.
	handshakeFailures []atomic.Int64

	// telemetryErrors counts what the OpenTelemetry SDK reported as
	// failed, such as exports the collector did not take.
	telemetryErrors atomic.Int64
	// unloggedDrops counts the spans dropped since the last warning that
	// reported them. dropQueueSize is the export queue's size that the
	// recorder last reported with a drop.
	unloggedDrops atomic.Int64
	dropQueueSize atomic.Int64

	stopOnce sync.Once
	// cutCtx ends when Shutdown ends the calls still in flight, with a
	// stoppedError as its cause: they end with Unavailable and that reason,
	// sent to the client and logged, not as cancelled by the client.
	cutCtx context.Context
	cut    context.CancelCauseFunc

	// stoppingCtx ends when Shutdown begins. Calls that wait for a replica
	// then end at once: they have not reached a plugin, and would hold the
	// stop for drain_timeout on the chance that one comes back.
	stoppingCtx context.Context
	stopWaiting context.CancelFunc
}

// listener is one configured address with its gRPC server.
type listener struct {
	gateway *Gateway
	config  config.Listener
	server  *grpc.Server
	lis     net.Listener    // set by Start
	index   int             // in Gateway.listeners and routes.defaults
	tls     *tlsutil.Source // the listener's certificates; nil for plaintext
}

// routes contains the engines and each listener's default engine, which
// calls are matched against. A reload swaps both at once, so that no call
// pairs the engines of one configuration with a default of another.
type routes struct {
	table    *routing.Table
	defaults []string // by listener index
}

// Options are settings of a gateway that do not come from its file.
type Options struct {
	// UserAgent is sent to plugins, such as "ssegw/1.2.0".
	UserAgent string

	// Version is the gateway's version, for telemetry and the status page.
	Version string

	// Telemetry are the OpenTelemetry providers to use. Nil means the
	// gateway makes its own from the configuration, and shuts them down
	// with itself.
	Telemetry *telemetry.Providers
}

// New builds a gateway for a validated configuration: it loads the
// certificates and starts connecting to the plugins, but does not listen
// yet.
func New(cfg *config.Config, logger *slog.Logger, opts Options) (*Gateway, error) {
	g := &Gateway{
		cfg:               cfg,
		logger:            logger,
		warnings:          newWarningLimiter(10 * time.Second),
		unsentWarnings:    newWarningLimiter(10 * time.Second),
		handshakeFailures: make([]atomic.Int64, len(tlsutil.HandshakeFailures)),
		telemetry:         opts.Telemetry,
		version:           opts.Version,
		userAgent:         opts.UserAgent,
		certificates:      tlsutil.NewWatcher(logger),
	}
	g.cutCtx, g.cut = context.WithCancelCause(context.Background())
	g.stoppingCtx, g.stopWaiting = context.WithCancel(context.Background())
	g.retireCtx, g.stopRetire = context.WithCancel(context.Background())
	g.current.Store(cfg)

	// Set up telemetry: spans and metrics exist even without an exporter,
	// for the access log and the status page.
	if g.telemetry == nil {
		providers, err := telemetry.New(context.Background(), cfg.Telemetry, telemetry.Options{Version: opts.Version})
		if err != nil {
			return nil, err
		}
		g.telemetry, g.ownsTelemetry = providers, true
	}
	// The SDK reports failed exports through a global handler that would
	// write plain lines with Go's log package, outside the gateway's log
	// format. An unreachable collector fails every export, hence the limit.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		g.telemetryErrors.Add(1)
		if dropped, ok := errors.AsType[*telemetry.DroppedSpansError](err); ok {
			g.warnDroppedSpans(dropped)
			return
		}
		if g.warnings.allow("telemetry") {
			g.logger.Warn(telemetryWarning, "error", err.Error())
		}
	}))
	meter := g.telemetry.MeterProvider.Meter(instrumentationName)
	instruments, err := newMetrics(meter, g)
	if err != nil {
		g.shutdownTelemetry()
		return nil, err
	}
	g.observer = &observer{
		tracer:     g.telemetry.TracerProvider.Tracer(instrumentationName),
		propagator: propagation.TraceContext{},
		metrics:    instruments,
		activity:   newActivity(),
		redaction:  cfg.Redaction,
		accessLog:  cfg.Log.AccessLogEnabled(),
	}

	// Connect to the engines' plugins.
	var engines []*routing.Engine
	for _, name := range cfg.EngineNames() {
		engine, err := g.newEngine(cfg.Engine(name), cfg.StateDir, nil)
		if err != nil {
			closeEngines(engines)
			g.shutdownTelemetry()
			return nil, err
		}
		engines = append(engines, engine)
	}
	// Prepare a gRPC server per listener.
	var defaults []string
	for i, listenerConfig := range cfg.Listeners {
		creds, source, err := g.serverCredentials(listenerConfig)
		if err != nil {
			closeEngines(engines)
			g.shutdownTelemetry()
			return nil, fmt.Errorf("listeners[%d].tls: %w", i, err)
		}
		l := &listener{gateway: g, config: listenerConfig, index: i, tls: source}
		l.server = grpc.NewServer(g.serverOptions(l, creds)...)
		g.listeners = append(g.listeners, l)
		defaults = append(defaults, listenerConfig.Engine)
	}
	g.routing.Store(&routes{table: routing.NewTable(engines), defaults: defaults})
	return g, nil
}

// serverOptions returns the gRPC server settings of a listener.
func (g *Gateway) serverOptions(l *listener, creds credentials.TransportCredentials) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.Creds(creds),
		grpc.UnknownServiceHandler(l.handleStream),
		grpc.ForceServerCodecV2(frameCodec{}),
		grpc.MaxRecvMsgSize(int(g.cfg.Limits.MaxMessageSize)),
		grpc.MaxSendMsgSize(int(g.cfg.Limits.MaxMessageSize)),
		grpc.MaxHeaderListSize(g.cfg.Limits.HeaderListCeiling()),
		grpc.MaxConcurrentStreams(g.cfg.Limits.MaxConcurrentStreams),
		// A fixed window, unlike gRPC's default that grows with the
		// measured bandwidth, bounds what Qlik sends ahead of the plugin:
		// otherwise a call's bundles would pile up in the gateway.
		grpc.InitialWindowSize(int32(g.cfg.Limits.StreamWindow)),
		grpc.InitialConnWindowSize(int32(g.cfg.Limits.ConnWindow())),
		grpc.ConnectionTimeout(handshakeTimeout),
		// Qlik keeps one connection per analytic connection for as long as
		// the engine runs, so the gateway never ends one on its own: no
		// maximum age and no idle timeout (gRPC's defaults, set here so
		// that they are a visible choice).
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: 0,
			MaxConnectionAge:  0,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             g.cfg.Keepalive.MinPingInterval,
			PermitWithoutStream: true,
		}),
	}
}

// serverCredentials returns mutual TLS for a listener with a tls section,
// with the source of its certificates, and plaintext for one marked
// insecure.
func (g *Gateway) serverCredentials(l config.Listener) (credentials.TransportCredentials, *tlsutil.Source, error) {
	if l.TLS == nil {
		return insecure.NewCredentials(), nil, nil
	}
	source, err := tlsutil.NewServerSource("listener "+l.Address, l.TLS.Files())
	if err != nil {
		return nil, nil, err
	}
	g.certificates.Add(source)
	return &handshakeLogger{TransportCredentials: credentials.NewTLS(source.ServerConfig()), gateway: g, listener: l.Address}, source, nil
}

// Start binds every listener and starts serving. When an address cannot
// be bound, none stays open, and the error names each such address.
func (g *Gateway) Start() error {
	var errs []error
	for _, l := range g.listeners {
		lis, err := net.Listen("tcp", l.config.Address)
		if err != nil {
			errs = append(errs, listenError(fmt.Sprintf("listeners[%d].address", l.index), l.config.Address, err))
			continue
		}
		guarded := &guardedListener{
			Listener:  lis,
			gateway:   g,
			address:   l.config.Address,
			max:       int64(g.cfg.Limits.MaxConnections),
			full:      fmt.Sprintf("connection closed: the listener has limits.max_connections open, and none has been silent for %v", silentGrace),
			plaintext: l.config.TLS == nil,
		}
		if guarded.max > 0 {
			guarded.silent = map[*countedConn]time.Time{}
			guarded.evict = guarded.closeSilent
		}
		l.lis = guarded
	}
	if len(errs) > 0 {
		g.closeListeners()
		// Checked now too, so that one message names every port to free.
		if g.cfg.Admin.Address != "none" {
			if lis, err := net.Listen("tcp", g.cfg.Admin.Address); err != nil {
				errs = append(errs, listenError(adminKey(g.cfg.Admin.Address), g.cfg.Admin.Address, err))
			} else {
				lis.Close()
			}
		}
		return errors.Join(errs...)
	}
	g.started = time.Now()
	backgroundCtx, stop := context.WithCancel(context.Background())
	g.stopBackground = stop
	// Renewed listener certificates may leave out a name that an engine's
	// hosts list.
	g.certificates.Reloaded = func(changed []*tlsutil.Source) {
		if slices.ContainsFunc(g.listeners, func(l *listener) bool { return l.tls != nil && slices.Contains(changed, l.tls) }) {
			g.warnUncoveredHosts()
		}
	}
	if err := g.certificates.Run(backgroundCtx); err != nil {
		g.logger.Warn("certificate files are not watched; reload them with SIGHUP", "error", err.Error())
	}
	go g.checkExpiry(backgroundCtx)
	if g.cfg.Admin.Address != "none" {
		if err := g.startAdmin(); err != nil {
			g.closeListeners()
			return err
		}
	}
	for _, l := range g.listeners {
		security := "mutual TLS"
		if l.config.TLS == nil {
			security = "plaintext"
		}
		g.logger.Info("listening", "address", l.lis.Addr().String(), "security", security, "engine", l.config.Engine)
		if l.config.TLS == nil {
			g.logger.Warn("plaintext listener: Qlik's ids and rows cross it unencrypted", "address", l.lis.Addr().String())
			if engine := g.cfg.Engine(l.config.Engine); engine != nil && len(engine.AllowClients) > 0 {
				g.logger.Warn("plaintext listener for an engine with allow_clients: no client certificate can arrive there, so every call on it is rejected",
					"address", l.lis.Addr().String(), "engine", engine.Name)
			}
		}
		go func() {
			if err := l.server.Serve(l.lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				g.logger.Error("listener failed", "address", l.lis.Addr().String(), "error", err)
			}
		}()
	}
	g.warnUncoveredHosts()
	for _, engine := range g.routes().Engines() {
		engine.Start()
	}
	if g.telemetry.TracesExport != "" {
		g.logger.Info("telemetry", "traces", g.telemetry.TracesExport, "metrics", g.telemetry.MetricsExport)
	}
	for _, name := range g.cfg.EngineNames() {
		g.logEngine(g.cfg.Engine(name))
	}
	return nil
}

// logEngine logs the settings of an engine that starts, at the gateway's
// start or in a reload.
func (g *Gateway) logEngine(engine *config.Engine) {
	if len(engine.Merge) > 0 {
		g.logger.Info("engine", "engine", engine.Name, "merge", engine.Merge, "hosts", engine.Hosts, "merge_scripts", engine.MergeScripts)
		return
	}
	backends := make([]string, len(engine.Backends))
	for i, backend := range engine.Backends {
		backends[i] = backend.Address
	}
	g.logger.Info("engine", "engine", engine.Name, "backends", backends, "hosts", engine.Hosts,
		"request_timeout", engine.RequestTimeout.String(), "balancer", engine.Balancer,
		"reconnect_buffer", engine.ReconnectWait().String())
}

// Config returns the configuration last applied, which is the one New was
// given or the one last reloaded. Of a reloaded one, the keys that only a
// start applies (see Reload) are not in effect.
func (g *Gateway) Config() *config.Config {
	return g.current.Load()
}

// Addrs returns the bound address of each listener, in configuration
// order, after Start.
func (g *Gateway) Addrs() []net.Addr {
	addrs := make([]net.Addr, 0, len(g.listeners))
	for _, l := range g.listeners {
		if l.lis != nil {
			addrs = append(addrs, l.lis.Addr())
		}
	}
	return addrs
}

// Shutdown stops accepting calls and waits for calls in flight to end,
// until ctx is done; then it ends the remaining calls with Unavailable,
// giving ctx's cause as the reason, such as "drain_timeout (30s) passed".
// It closes the connections to the plugins last. It returns that reason
// when it ended calls, and nil when they all finished.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.stopOnce.Do(func() {
		// A reload under way finishes first, and none starts after, because
		// a later one would start engines that nothing closes.
		g.reloadMu.Lock()
		g.stopping.Store(true)
		g.reloadMu.Unlock()
		g.stopWaiting()
		if g.stopBackground != nil {
			g.stopBackground()
		}
		var wg sync.WaitGroup
		for _, l := range g.listeners {
			wg.Go(func() {
				stopped := make(chan struct{})
				go func() {
					l.server.GracefulStop()
					close(stopped)
				}()
				select {
				case <-stopped:
				case <-ctx.Done():
					g.cut(&stoppedError{reason: context.Cause(ctx)})
					// Let the handlers send their status, then close what
					// is left.
					select {
					case <-stopped:
					case <-time.After(cutGrace):
						l.server.Stop()
						<-stopped
					}
				}
			})
		}
		wg.Wait()
		if g.admin != nil {
			g.admin.shutdown(ctx)
		}
		closeEngines(g.routes().Engines())
		g.stopRetire()
		g.retiring.Wait()
		g.shutdownTelemetry()
	})
	var stopped *stoppedError
	if errors.As(context.Cause(g.cutCtx), &stopped) {
		return errors.New(stopped.why())
	}
	return nil
}

// cutGrace is how long calls ended by Shutdown get to send their status
// to the client before their connections are closed.
const cutGrace = 2 * time.Second

// HandshakeFailures returns how many TLS handshakes failed, by reason.
func (g *Gateway) HandshakeFailures() map[tlsutil.HandshakeFailure]int64 {
	counts := make(map[tlsutil.HandshakeFailure]int64, len(tlsutil.HandshakeFailures))
	for i, reason := range tlsutil.HandshakeFailures {
		counts[reason] = g.handshakeFailures[i].Load()
	}
	return counts
}

func (g *Gateway) routes() *routing.Table {
	return g.routing.Load().table
}

// warnUncoveredHosts logs each engine host name of the current
// configuration that no running TLS listener's certificate lists, and each
// engine that Qlik cannot reach (see UnroutedEngines). Qlik's calls by
// such a name fail in the TLS handshake, so no call record would show
// them. Listeners change only at a restart, so the certificates
// checked are those the running listeners present, whatever a reloaded
// file contains.
func (g *Gateway) warnUncoveredHosts() {
	var sources []*tlsutil.Source
	var labels []string
	for _, l := range g.listeners {
		if l.tls != nil {
			sources = append(sources, l.tls)
			labels = append(labels, fmt.Sprintf("listeners[%d].tls", l.index))
		}
	}
	for _, warning := range g.Config().UncoveredHostsOf(sources, labels) {
		g.logger.Warn("engine host name missing from the gateway's certificate", "warning", warning)
	}
	for _, warning := range g.Config().UnroutedEngines() {
		g.logger.Warn("engine that Qlik cannot reach", "warning", warning)
	}
}

// expiryCheckInterval is how often certificates are checked for expiry.
const expiryCheckInterval = 12 * time.Hour

// checkExpiry warns about certificates that expire soon, at start and then
// twice a day, until ctx ends.
func (g *Gateway) checkExpiry(ctx context.Context) {
	ticker := time.NewTicker(expiryCheckInterval)
	defer ticker.Stop()
	for {
		now := time.Now()
		for _, warning := range g.certificates.Expiring(g.Config().CertificateExpiryWarning, now) {
			message := "certificate expires soon; renew it (ssegw certs init --force keeps the CA of a set it made), the gateway reloads it without a restart"
			switch {
			case tlsutil.IsNotYetValidWarning(warning):
				message = "certificate not valid yet: the other side refuses every connection that presents or needs it until then; check this machine's clock"
			case tlsutil.IsUnusableWarning(warning):
				message = "certificate expired: the other side refuses every connection that presents or needs it; renew it (ssegw certs init --force keeps the CA of a set it made), the gateway reloads it without a restart"
			}
			g.logger.Warn(message, "warning", warning)
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// telemetryWarning is the message of the warnings about spans or metrics
// that did not reach their collector.
const telemetryWarning = "telemetry failed, so some spans or metrics are missing"

// warnDroppedSpans warns about spans that the recorder dropped, with a
// limit of its own: a failing collector reports an export error just
// before each count, which would take the shared one. Counts that the
// limit holds back add up to the next warning.
func (g *Gateway) warnDroppedSpans(dropped *telemetry.DroppedSpansError) {
	g.dropQueueSize.Store(int64(dropped.QueueSize))
	total := g.unloggedDrops.Add(int64(dropped.Spans))
	if !g.warnings.allow("telemetry: dropped spans") {
		return
	}
	g.unloggedDrops.Add(-total)
	g.logger.Warn(telemetryWarning, "error", (&telemetry.DroppedSpansError{Spans: int(total), QueueSize: dropped.QueueSize}).Error())
}

// warnHeldBackDrops warns about the dropped spans that the limit of
// warnDroppedSpans held back, whatever the limit: after the last export
// no later warning would count them.
func (g *Gateway) warnHeldBackDrops() {
	if total := g.unloggedDrops.Swap(0); total > 0 {
		g.logger.Warn(telemetryWarning, "error", (&telemetry.DroppedSpansError{Spans: int(total), QueueSize: int(g.dropQueueSize.Load())}).Error())
	}
}

// shutdownTelemetry flushes the exporters the gateway made itself.
func (g *Gateway) shutdownTelemetry() {
	if !g.ownsTelemetry {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := g.telemetry.Shutdown(ctx); err != nil {
		g.logger.Warn("flushing telemetry failed", "error", err.Error())
	}
	g.warnHeldBackDrops()
}

// listenError reports that address, the value of key, could not be bound,
// with what to do when another process holds the port. The check for that
// case knows Unix's error only: on Windows the error comes without it.
func listenError(key, address string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("%s: cannot listen on %s: the port is in use; stop the process that holds it (ss -ltnp lists them) or choose another port: %w", key, address, err)
	}
	return fmt.Errorf("%s: cannot listen on %s: %w", key, address, err)
}

// adminKey names the admin listener's address for a message, saying so
// when it is the default, which a file that has no admin section still
// gets.
func adminKey(address string) string {
	if address == config.DefaultAdminAddress {
		return "admin.address (the default; none turns the admin listener off)"
	}
	return "admin.address"
}

func (g *Gateway) closeListeners() {
	for _, l := range g.listeners {
		if l.lis != nil {
			l.lis.Close()
			l.lis = nil
		}
	}
}

func closeEngines(engines []*routing.Engine) {
	for _, engine := range engines {
		engine.Close()
	}
}
