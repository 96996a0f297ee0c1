package gateway_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/routing"
	"github.com/ssegw/ssegw/ssepb"
	"github.com/ssegw/ssegw/tlsutil"
)

// countedPlugin is a test plugin whose GetCapabilities returns its own
// pluginIdentifier, so that a client can tell which plugin served it, and
// counts the calls it served, without the gateway's own probes.
type countedPlugin struct {
	*ssetest.Plugin
	identifier string
	calls      atomic.Int64
}

// startCountedPlugin starts a plugin that identifies itself as identifier.
func startCountedPlugin(t *testing.T, identifier string) *countedPlugin {
	t.Helper()
	p := &countedPlugin{identifier: identifier}
	p.Plugin = ssetest.StartPlugin(t, &ssetest.Connector{
		Capabilities: func(ctx context.Context, _ *ssepb.Empty) (*ssepb.Capabilities, error) {
			if !ssetest.IsProbe(ctx) {
				p.calls.Add(1)
			}
			return &ssepb.Capabilities{PluginIdentifier: identifier, PluginVersion: "1.0"}, nil
		},
	})
	return p
}

// callCounts returns how many calls each plugin has served so far.
func callCounts(plugins ...*countedPlugin) []int64 {
	counts := make([]int64, len(plugins))
	for i, p := range plugins {
		counts[i] = p.calls.Load()
	}
	return counts
}

// checkCallsSince checks that since callCounts returned before, the plugin
// identified as served has served one call and every other plugin none.
// An empty served means that no plugin has served a call.
func checkCallsSince(t *testing.T, before []int64, served string, plugins ...*countedPlugin) {
	t.Helper()
	for i, p := range plugins {
		want := before[i]
		if p.identifier == served {
			want++
		}
		if got := p.calls.Load(); got != want {
			t.Errorf("%s calls = %d, want %d", p.identifier, got, want)
		}
	}
}

// serverNameCreds is TLS that sends and verifies serverName whatever the
// :authority of the channel. grpc-go's own TLS credentials take the server
// name from the authority (as of v1.85), so they cannot send the two apart,
// while Qlik's settings and a routing proxy in front can.
type serverNameCreds struct {
	credentials.TransportCredentials
	serverName string
}

func (c serverNameCreds) ClientHandshake(ctx context.Context, _ string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c.TransportCredentials.ClientHandshake(ctx, c.serverName, conn)
}

func (c serverNameCreds) Clone() credentials.TransportCredentials {
	return serverNameCreds{TransportCredentials: c.TransportCredentials.Clone(), serverName: c.serverName}
}

// dialTLSAs returns a mutual TLS client with the certificates of the
// Qlik-style clientDir that sends serverName in its handshake and verifies
// the gateway's certificate against it, and sends authority as :authority.
func dialTLSAs(t *testing.T, address, clientDir, serverName, authority string) ssepb.ConnectorClient {
	t.Helper()
	// An empty server name in the configuration leaves the credentials'
	// authority empty too, so grpc-go accepts WithAuthority with any value.
	tlsConfig, err := tlsutil.ClientFilesInDir(clientDir, "", "", "").ClientConfig("")
	if err != nil {
		t.Fatalf("client TLS: %v", err)
	}
	creds := serverNameCreds{TransportCredentials: credentials.NewTLS(tlsConfig), serverName: serverName}
	// These credentials replace the plaintext ones that Dial sets first.
	return ssetest.Dial(t, address, grpc.WithTransportCredentials(creds), grpc.WithAuthority(authority))
}

// withEngineHeader returns ctx sending engine in the x-sse-engine header,
// or ctx itself for an empty engine.
func withEngineHeader(ctx context.Context, engine string) context.Context {
	if engine == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, routing.EngineHeader, engine)
}

// checkRouted calls GetCapabilities with client and checks that the call
// ends with wantCode. For OK, it checks that the plugin identified as
// wantPlugin returned the capabilities. For any other code, it checks that
// the status message contains each of wantInMessage.
func checkRouted(t *testing.T, client ssepb.ConnectorClient, engineHeader string, wantPlugin string, wantCode codes.Code, wantInMessage ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(withEngineHeader(testContext(t), engineHeader), 10*time.Second)
	defer cancel()
	caps, err := client.GetCapabilities(ctx, &ssepb.Empty{})
	if got := status.Code(err); got != wantCode {
		t.Fatalf("GetCapabilities() code = %v (%v), want %v", got, err, wantCode)
	}
	if wantCode == codes.OK {
		if got := caps.GetPluginIdentifier(); got != wantPlugin {
			t.Errorf("GetCapabilities().PluginIdentifier = %q, want %q", got, wantPlugin)
		}
		return
	}
	message := status.Convert(err).Message()
	for _, part := range wantInMessage {
		if !strings.Contains(message, part) {
			t.Errorf("GetCapabilities() message = %q, want it to contain %q", message, part)
		}
	}
}

// TestRoutingByListener checks that each port serves its own default
// engine, and that the x-sse-engine header selects an engine whatever the
// port. Elsewhere Qlik logged UNAVAILABLE when several analytic
// connections pointed at one plugin port (C07).
func TestRoutingByListener(t *testing.T) {
	pluginA := startCountedPlugin(t, "plugin-a")
	pluginB := startCountedPlugin(t, "plugin-b")
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", nil), ssetest.Listen("Py", nil)},
		Engines: map[string]*config.Engine{
			"R":  ssetest.Engine(pluginA.Addr),
			"Py": ssetest.Engine(pluginB.Addr),
		},
	})
	portR := ssetest.Dial(t, gw.Addrs[0])
	portPy := ssetest.Dial(t, gw.Addrs[1])

	tests := []struct {
		name          string
		client        ssepb.ConnectorClient
		engineHeader  string
		wantPlugin    string
		wantCode      codes.Code
		wantInMessage []string
	}{
		{name: "R port", client: portR, wantPlugin: "plugin-a"},
		{name: "Py port", client: portPy, wantPlugin: "plugin-b"},
		{name: "R port with header Py", client: portR, engineHeader: "Py", wantPlugin: "plugin-b"},
		{name: "Py port with header r", client: portPy, engineHeader: "r", wantPlugin: "plugin-a"},
		{
			name:          "unknown engine header",
			client:        portR,
			engineHeader:  "Julia",
			wantCode:      codes.NotFound,
			wantInMessage: []string{`"Julia"`, "configured engines: Py, R"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := callCounts(pluginA, pluginB)
			checkRouted(t, tt.client, tt.engineHeader, tt.wantPlugin, tt.wantCode, tt.wantInMessage...)

			checkCallsSince(t, before, tt.wantPlugin, pluginA, pluginB)
		})
	}
}

// TestRoutingByHostName checks that one mutual TLS port without a default
// engine routes by :authority, then by TLS server name, and that a host no
// engine claims gets Unimplemented naming the host and the engines.
// Whether several plugins can share one port was unclear to Qlik users
// elsewhere (C07).
func TestRoutingByHostName(t *testing.T) {
	certs := ssetest.NewCerts(t)
	pluginA := startCountedPlugin(t, "plugin-a")
	pluginB := startCountedPlugin(t, "plugin-b")
	engineR := ssetest.Engine(pluginA.Addr)
	engineR.Hosts = []string{"r.gw.test"}
	enginePy := ssetest.Engine(pluginB.Addr)
	// Matching ignores case and a trailing dot.
	enginePy.Hosts = []string{"PY.gw.test."}
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("", &config.ServerTLS{Dir: certs.GatewayDir})},
		Engines:   map[string]*config.Engine{"R": engineR, "Py": enginePy},
	})
	address := gw.Addrs[0]

	tests := []struct {
		name string
		// serverName is verified against the gateway's certificate and
		// sent as TLS server name and, unless authority is set, as
		// :authority.
		serverName    string
		authority     string
		engineHeader  string
		wantPlugin    string
		wantCode      codes.Code
		wantInMessage []string
	}{
		{name: "r.gw.test", serverName: "r.gw.test", wantPlugin: "plugin-a"},
		{name: "py.gw.test", serverName: "py.gw.test", wantPlugin: "plugin-b"},
		{name: "server name alone", serverName: "py.gw.test", authority: address, wantPlugin: "plugin-b"},
		{name: "authority alone", serverName: "localhost", authority: "r.gw.test", wantPlugin: "plugin-a"},
		{name: "authority before server name", serverName: "py.gw.test", authority: "r.gw.test:443", wantPlugin: "plugin-a"},
		{name: "header before host", serverName: "r.gw.test", engineHeader: "PY", wantPlugin: "plugin-b"},
		{
			name:          "host of no engine",
			serverName:    "localhost",
			authority:     "x.gw.test",
			wantCode:      codes.Unimplemented,
			wantInMessage: []string{`"x.gw.test"`, "configured engines: Py, R"},
		},
		{
			name:          "unknown engine header",
			serverName:    "r.gw.test",
			engineHeader:  "Julia",
			wantCode:      codes.NotFound,
			wantInMessage: []string{`"Julia"`, "configured engines: Py, R"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			authority := tt.authority
			if authority == "" {
				authority = tt.serverName
			}
			client := dialTLSAs(t, address, certs.QlikDir, tt.serverName, authority)
			before := callCounts(pluginA, pluginB)
			checkRouted(t, client, tt.engineHeader, tt.wantPlugin, tt.wantCode, tt.wantInMessage...)

			checkCallsSince(t, before, tt.wantPlugin, pluginA, pluginB)
		})
	}
}

// TestRoutingConflictsRejected checks that config.Parse rejects two
// listeners on one address and two engines claiming one host name, with a
// message naming the keys, and accepts the same engines told apart by port
// or by host. A configuration with nothing to tell two engines apart
// would send calls to either of them (C07).
func TestRoutingConflictsRejected(t *testing.T) {
	const engines = `
engines:
  R:
    hosts: [r.gw.test]
    backends: [{address: "127.0.0.1:50055"}]
  Py:
    hosts: [py.gw.test]
    backends: [{address: "127.0.0.1:50056"}]
`
	tests := []struct {
		name string
		yaml string
		// wantInError are parts of the error; none means the file is valid.
		wantInError []string
	}{
		{
			name: "one listener per engine",
			yaml: `
listeners:
  - {address: "127.0.0.1:50051", engine: R, insecure: true}
  - {address: "127.0.0.1:50052", engine: Py, insecure: true}
` + engines,
		},
		{
			name: "engines told apart by host",
			yaml: `
listeners:
  - {address: "127.0.0.1:50051", insecure: true}
` + engines,
		},
		{
			name: "two listeners on one address",
			yaml: `
listeners:
  - {address: "127.0.0.1:50051", engine: R, insecure: true}
  - {address: "127.0.0.1:50051", engine: Py, insecure: true}
` + engines,
			wantInError: []string{"listeners[1].address", `"127.0.0.1:50051"`, "listeners[0]"},
		},
		{
			name: "every interface and loopback on one port",
			yaml: `
listeners:
  - {address: ":50051", engine: R, insecure: true}
  - {address: "127.0.0.1:50051", engine: Py, insecure: true}
` + engines,
			wantInError: []string{"listeners[1].address", `"127.0.0.1:50051"`, "listeners[0]"},
		},
		{
			// net.Listen binds localhost to its first IPv4 address,
			// 127.0.0.1 on usual systems, so the second listener could
			// never open.
			name: "localhost and 127.0.0.1 on one port",
			yaml: `
listeners:
  - {address: "localhost:50051", engine: R, insecure: true}
  - {address: "127.0.0.1:50051", engine: Py, insecure: true}
` + engines,
			wantInError: []string{"listeners[1].address", `"127.0.0.1:50051"`, "listeners[0]"},
		},
		{
			name: "two engines claim one host",
			yaml: `
listeners:
  - {address: "127.0.0.1:50051", insecure: true}
engines:
  R:
    hosts: [shared.gw.test]
    backends: [{address: "127.0.0.1:50055"}]
  Py:
    hosts: [SHARED.gw.test.]
    backends: [{address: "127.0.0.1:50056"}]
`,
			wantInError: []string{"engines.R.hosts[0]", `"shared.gw.test"`, "engine Py"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(tt.yaml), nil)
			if len(tt.wantInError) == 0 {
				if err != nil {
					t.Fatalf("Parse() error = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse() = %d listeners and %d engines, want an error", len(cfg.Listeners), len(cfg.Engines))
			}
			for _, part := range tt.wantInError {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("Parse() error = %q, want it to contain %q", err, part)
				}
			}
		})
	}
}

// TestRoutingPluginStopped checks that a call to an engine whose only
// plugin has stopped fails with Unavailable within a second, naming the
// engine, while the other engine keeps working. Qlik's engine log shows
// only the code, UNAVAILABLE, so the message must say which engine. The
// engine's reconnect_buffer is 0: by default a call would wait for the
// plugin to come back. GetCapabilities is still answered, from the
// functions the gateway learnt, so that a Qlik engine starting now learns
// them (C07).
func TestRoutingPluginStopped(t *testing.T) {
	pluginA := startCountedPlugin(t, "plugin-a")
	pluginB := startCountedPlugin(t, "plugin-b")
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", nil), ssetest.Listen("Py", nil)},
		Engines: map[string]*config.Engine{
			"R":  ssetest.FailFast(ssetest.Engine(pluginA.Addr)),
			"Py": ssetest.Engine(pluginB.Addr),
		},
	})
	portR := ssetest.Dial(t, gw.Addrs[0])
	portPy := ssetest.Dial(t, gw.Addrs[1])

	// The gateway holds a working connection to plugin A before it stops.
	checkRouted(t, portR, "", "plugin-a", codes.OK)
	pluginA.Server.Stop()

	ctx, cancel := context.WithTimeout(testContext(t), 10*time.Second)
	defer cancel()
	start := time.Now()
	out := exchange(functionContext(t, ctx, 0), portR)
	elapsed := time.Since(start)
	if got := status.Code(out.err); got != codes.Unavailable {
		t.Errorf("ExecuteFunction() with plugin A stopped: code = %v (%v), want Unavailable", got, out.err)
	}
	if elapsed > time.Second {
		t.Errorf("ExecuteFunction() with plugin A stopped took %v, want at most 1s", elapsed)
	}
	if message := status.Convert(out.err).Message(); !strings.Contains(message, "engine R") {
		t.Errorf("ExecuteFunction() message = %q, want it to name engine R", message)
	}

	capabilities, err := portR.GetCapabilities(ctx, &ssepb.Empty{})
	if err != nil {
		t.Errorf("GetCapabilities() with plugin A stopped = %v, want the known capabilities", err)
	} else if got := capabilities.GetPluginIdentifier(); got != "plugin-a" {
		t.Errorf("GetCapabilities().PluginIdentifier = %q, want plugin-a", got)
	}

	checkRouted(t, portPy, "", "plugin-b", codes.OK)
}

// TestFunctionPolicyMisspeltWarned checks that a function policy whose
// name is no function of the plugin is logged as a warning once the
// engine learns the plugin's functions, naming those it has.
func TestFunctionPolicyMisspeltWarned(t *testing.T) {
	plugin := startSecPlugin(t)
	engine := ssetest.Engine(plugin.Addr)
	engine.Functions = map[string]*config.FunctionPolicy{"Ecko": {MaxAttempts: 1}, "echo": {MaxAttempts: 2}}
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", nil)},
		Engines:   map[string]*config.Engine{"R": engine},
	})
	// The warnings come before this record.
	gw.Logs.WaitFor(t, "capabilities agreed", 10*time.Second, nil)
	record := gw.Logs.WaitFor(t, "function policy names no function of the plugin; check its spelling", time.Second, nil)
	if record["function"] != "Ecko" || !strings.Contains(fmt.Sprint(record["functions"]), "Echo") {
		t.Errorf("warning = %v, want it to name Ecko and the plugin's functions, Echo among them", record)
	}
	if got := len(gw.Logs.Records("function policy names no function of the plugin; check its spelling")); got != 1 {
		t.Errorf("%d warnings, want 1: echo is the plugin's Echo", got)
	}
}
