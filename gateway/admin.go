package gateway

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ssegw/ssegw/routing"
	"github.com/ssegw/ssegw/ssepb"
)

// adminServer serves health checks, metrics and the status page on the
// admin listener.
type adminServer struct {
	server *http.Server
	lis    net.Listener
}

// maxAdminConnections bounds the admin listener's open connections, so
// that its clients cannot use up the file descriptors that Qlik's
// connections need. Health checks and scrapes hold a few each.
const maxAdminConnections = 64

// startAdmin listens on the admin address and serves until shutdown.
func (g *Gateway) startAdmin() error {
	lis, err := net.Listen("tcp", g.cfg.Admin.Address)
	if err != nil {
		return listenError(adminKey(g.cfg.Admin.Address), g.cfg.Admin.Address, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", g.serveReady)
	mux.Handle("GET /metrics", g.telemetry.Metrics)
	mux.HandleFunc("GET /{$}", g.serveStatusPage)
	if g.cfg.Admin.Pprof {
		// Profiles over time last as long as their seconds parameter sets,
		// each on a connection of the admin listener's 64: one at a time,
		// so that they cannot hold them all and lock the health checks
		// out. Profiles of the moment, such as the heap's, are not held.
		profiles := make(chan struct{}, 1)
		one := func(handler http.HandlerFunc) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				overTime := strings.HasSuffix(r.URL.Path, "/profile") || strings.HasSuffix(r.URL.Path, "/trace") || r.URL.Query().Has("seconds")
				if !overTime {
					handler(w, r)
					return
				}
				select {
				case profiles <- struct{}{}:
					defer func() { <-profiles }()
					handler(w, r)
				default:
					http.Error(w, "another profile is being taken; ask again once it ends", http.StatusTooManyRequests)
				}
			}
		}
		mux.HandleFunc("GET /debug/pprof/", one(pprof.Index))
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", one(pprof.Profile))
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", one(pprof.Trace))
	}
	idle := &idleConns{conns: map[net.Conn]struct{}{}, silent: map[net.Conn]time.Time{}}
	lis = &guardedListener{Listener: lis, gateway: g, address: g.cfg.Admin.Address, max: maxAdminConnections,
		full:  fmt.Sprintf("connection closed: the admin listener has %d connections open, as many as it takes, and none idle or without a request header after %v", maxAdminConnections, silentGrace),
		evict: idle.closeOne}
	g.admin = &adminServer{
		lis: lis,
		server: &http.Server{
			// A new connection finding the listener full closes an idle
			// keep-alive one, or one that has not sent its request header
			// within a second, so that clients that keep theirs open
			// cannot lock out a health check.
			ConnState:         idle.track,
			Handler:           withoutBody(mux),
			ReadHeaderTimeout: 10 * time.Second,
			// A request must arrive whole within it; withoutBody ends those
			// that announce a body sooner.
			ReadTimeout: 10 * time.Second,
			// Without it, each keep-alive connection stays open for good
			// after its last request, and clients could use up the
			// process's file descriptors, which the gRPC listeners need
			// too. Two minutes outlast any usual scrape interval.
			IdleTimeout: 2 * time.Minute,
			ErrorLog:    nil,
		},
	}
	g.logger.Info("admin listening", "address", lis.Addr().String())
	go func() {
		if err := g.admin.server.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			g.logger.Error("admin listener failed", "address", lis.Addr().String(), "error", err.Error())
		}
	}()
	return nil
}

// withoutBody responds to a request that announces a body with 400 and
// closes its connection at once. Admin requests have none, and net/http
// would otherwise read the body that such a request never sends until
// ReadTimeout, holding one of the listener's connections: 64 of them
// locked the health checks out. A client that does send a large body may
// see the connection reset rather than the 400, since the body stays
// unread.
func withoutBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength == 0 && len(r.TransferEncoding) == 0 {
			next.ServeHTTP(w, r)
			return
		}
		if hijacker, ok := w.(http.Hijacker); ok {
			if conn, buffered, err := hijacker.Hijack(); err == nil {
				body := "admin requests take no body\n"
				fmt.Fprintf(buffered, "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", len(body))
				if r.Method != http.MethodHead {
					buffered.WriteString(body)
				}
				buffered.Flush()
				conn.Close()
				return
			}
		}
		w.Header().Set("Connection", "close")
		http.Error(w, "admin requests take no body", http.StatusBadRequest)
	})
}

// idleConns is the admin listener's connections that a new one may take
// the place of: keep-alive connections waiting for a request, and
// connections whose first request header has not arrived.
type idleConns struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	// silent maps each connection whose first request header has not
	// arrived to when it opened. net/http reports a connection active only
	// once the whole header is in.
	silent map[net.Conn]time.Time
}

// silentGrace is how long a new connection may take to send its first
// request header before a connection that finds the listener full takes
// its place. Health checks and scrapers send theirs at once, while
// connections that send nothing, or trickle it, would otherwise lock them
// out until ReadHeaderTimeout.
const silentGrace = time.Second

func (i *idleConns) track(conn net.Conn, state http.ConnState) {
	i.mu.Lock()
	defer i.mu.Unlock()
	delete(i.conns, conn)
	delete(i.silent, conn)
	switch state {
	case http.StateIdle:
		i.conns[conn] = struct{}{}
	case http.StateNew:
		i.silent[conn] = time.Now()
	}
}

// closeOne closes an idle connection, or else the oldest one whose first
// request header has not arrived within silentGrace, if there is one, and
// reports whether it did.
func (i *idleConns) closeOne() bool {
	i.mu.Lock()
	var victim net.Conn
	for conn := range i.conns {
		victim = conn
		delete(i.conns, conn)
		break
	}
	if victim == nil {
		victim = oldestSilent(i.silent)
		delete(i.silent, victim)
	}
	i.mu.Unlock()
	if victim == nil {
		return false
	}
	victim.Close()
	return true
}

func (a *adminServer) shutdown(ctx context.Context) {
	if err := a.server.Shutdown(ctx); err != nil {
		a.server.Close()
	}
}

// AdminAddr returns the admin listener's address after Start, or nil when
// it is off.
func (g *Gateway) AdminAddr() net.Addr {
	if g.admin == nil {
		return nil
	}
	return g.admin.lis.Addr()
}

// serveReady answers 200 when every engine has a connected replica or
// known capabilities, so that Qlik can learn its functions; else 503 with
// the engines that are not ready.
func (g *Gateway) serveReady(w http.ResponseWriter, _ *http.Request) {
	var notReady []string
	for _, engine := range g.routes().Engines() {
		if !engine.Ready() {
			notReady = append(notReady, engine.Name)
		}
	}
	now := time.Now()
	warnings := g.certificates.Expiring(g.Config().CertificateExpiryWarning, now)
	var expired []string
	for _, l := range g.listeners {
		if l.tls != nil {
			expired = append(expired, l.tls.Unusable(now)...)
		}
	}
	if g.stopping.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not ready: the gateway is stopping, so it refuses new connections but lets the calls in flight finish")
	} else if len(expired) > 0 {
		// Every Qlik engine refuses the listener's certificate, or has
		// its own refused.
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "not ready: a listener's certificate has expired or is not valid yet, so every TLS connection to it fails: %s\n", strings.Join(expired, "; "))
	} else if len(notReady) > 0 {
		slices.Sort(notReady)
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "not ready: no replica connected and no capabilities known for engine %s\n", strings.Join(notReady, ", "))
	} else {
		fmt.Fprintln(w, "ready")
	}
	// Soon-expiring certificates do not make the gateway unready: they
	// still work, and a replica restart would not help. An expired one of
	// a plugin's connection fails that engine's replicas, which report it.
	// Those the reason above names already are not repeated.
	for _, warning := range warnings {
		if slices.ContainsFunc(expired, func(reason string) bool { return reason == warning }) {
			continue
		}
		fmt.Fprintln(w, "warning:", warning)
	}
}

//go:embed status.html
var statusPageSource string

var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"ago":      func(t time.Time) string { return formatAgo(time.Since(t)) },
	"duration": func(d time.Duration) string { return d.Round(time.Microsecond).String() },
	"rate":     func(r float64) string { return fmt.Sprintf("%.2f", r) },
}).Parse(statusPageSource))

// statusData is what the status page shows.
type statusData struct {
	Version     string
	Started     time.Time
	Listeners   []string
	Stopping    bool // the gateway drains its calls and takes no new ones
	Engines     []engineStatus
	Recent      []CallRecord
	Functions   []functionRate
	Apps        []functionRate
	GeneratedAt time.Time
}

type engineStatus struct {
	Name           string
	Hosts          []string
	RequestTimeout time.Duration
	Ready          bool
	Known          bool // the engine's capabilities are known
	Plugin         string
	AllowScript    bool
	ScriptPolicy   string   // scripts: allow, audit or deny
	Members        []string // the engines a merged engine merges
	MergeScripts   string   // the member that runs a merged engine's scripts
	Fetched        time.Time
	Replicas       []routing.ReplicaStatus
	Functions      []functionStatus
}

type functionStatus struct {
	ID        int32
	Name      string
	Type      string
	Signature string
	Apps      []string
}

func (g *Gateway) serveStatusPage(w http.ResponseWriter, _ *http.Request) {
	now := time.Now()
	data := statusData{Version: g.version, Started: g.started, GeneratedAt: now, Stopping: g.stopping.Load()}
	routes := g.routing.Load()
	for _, l := range g.listeners {
		if l.lis != nil {
			security := "mutual TLS"
			if l.config.TLS == nil {
				security = "plaintext"
			}
			engine := routes.defaults[l.index] // a reload may have changed it
			if engine == "" {
				engine = "by host name"
			}
			data.Listeners = append(data.Listeners, fmt.Sprintf("%s (%s, %s)", l.lis.Addr(), security, engine))
		}
	}

	engines := routes.table.Engines()
	slices.SortFunc(engines, func(a, b *routing.Engine) int { return strings.Compare(a.Name, b.Name) })
	for _, engine := range engines {
		data.Engines = append(data.Engines, g.engineStatus(engine))
	}
	data.Recent = g.observer.activity.recentCalls()
	data.Functions, data.Apps = g.observer.activity.rates(now)
	data.Apps = data.Apps[:min(len(data.Apps), 20)]

	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := statusPage.Execute(w, data); err != nil {
		g.logger.Warn("rendering the status page failed", "error", err.Error())
	}
}

// engineStatus describes an engine for the status page. A merged engine
// shows the functions it offers Qlik. Calls are recorded under the member
// and its own name of the function, so the apps of a merged function are
// those that called the member's function, through the merged engine or
// directly.
func (g *Gateway) engineStatus(engine *routing.Engine) engineStatus {
	status := engineStatus{
		Name:           engine.Name,
		Hosts:          engine.Config.Hosts,
		RequestTimeout: engine.Config.RequestTimeout,
		Ready:          engine.Ready(),
		ScriptPolicy:   engine.Config.Scripts,
		Members:        engine.Config.Merge,
	}
	if member := engine.ScriptMember(); member != nil {
		status.MergeScripts = member.Name
	}
	for _, replica := range engine.Replicas() {
		status.Replicas = append(status.Replicas, replica.Status())
	}

	capabilities := engine.Capabilities()
	var merged map[int32]routing.MergedFunction
	if engine.Merged() {
		capabilities, merged = engine.MergedCapabilities()
		if len(capabilities.Message.GetFunctions()) == 0 && !engine.MembersKnown() {
			capabilities = nil
		}
	}
	if capabilities == nil {
		return status
	}

	message := capabilities.Message
	status.Known = true
	status.Plugin = strings.TrimSpace(message.GetPluginIdentifier() + " " + message.GetPluginVersion())
	status.AllowScript = message.GetAllowScript()
	status.Fetched = capabilities.Fetched
	for _, function := range message.GetFunctions() {
		calledAs, name := engine.Name, function.GetName()
		if member, ok := merged[function.GetFunctionId()]; ok {
			calledAs, name = member.Member.Name, memberFunctionName(member)
		}
		status.Functions = append(status.Functions, functionStatus{
			ID:        function.GetFunctionId(),
			Name:      function.GetName(),
			Type:      function.GetFunctionType().String(),
			Signature: signature(function),
			Apps:      g.observer.activity.appsOf(calledAs, name),
		})
	}
	return status
}

// memberFunctionName returns the member's own name of a merged engine's
// function, before merge_prefix renamed it.
func memberFunctionName(function routing.MergedFunction) string {
	if capabilities := function.Member.Capabilities(); capabilities != nil {
		for _, definition := range capabilities.Message.GetFunctions() {
			if definition.GetFunctionId() == function.MemberID {
				return definition.GetName()
			}
		}
	}
	return function.Name
}

// signature writes a function as Qlik's expressions see it, such as
// "SumOfRows(a NUMERIC, b NUMERIC) NUMERIC".
func signature(function *ssepb.FunctionDefinition) string {
	params := make([]string, len(function.GetParams()))
	for i, param := range function.GetParams() {
		params[i] = param.GetName() + " " + param.GetDataType().String()
	}
	return fmt.Sprintf("%s(%s) %s", function.GetName(), strings.Join(params, ", "), function.GetReturnType())
}

func formatAgo(d time.Duration) string {
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	}
	return fmt.Sprintf("%dh ago", int(d.Hours()))
}
