package gateway_test

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"io"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/ssepb"
	"github.com/ssegw/ssegw/tlsutil"
)

// secWait bounds each wait of the security tests.
const secWait = 10 * time.Second

// secPlugin is a test plugin that offers scripts, echoes the rows of
// ExecuteFunction and EvaluateScript, and counts the calls of each method
// that were not the gateway's probes.
type secPlugin struct {
	*ssetest.Plugin
	capabilities, executes, scripts atomic.Int64
}

// secIdentifier is the pluginIdentifier of secPlugin.
const secIdentifier = "security-plugin"

// startSecPlugin serves a secPlugin on loopback.
func startSecPlugin(t *testing.T) *secPlugin {
	t.Helper()
	p := &secPlugin{}
	echo := func(counter *atomic.Int64) func(ssetest.Stream) error {
		return func(s ssetest.Stream) error {
			counter.Add(1)
			return ssetest.Echo(s)
		}
	}
	p.Plugin = ssetest.StartPlugin(t, &ssetest.Connector{
		Capabilities: func(ctx context.Context, _ *ssepb.Empty) (*ssepb.Capabilities, error) {
			if !ssetest.IsProbe(ctx) {
				p.capabilities.Add(1)
			}
			return &ssepb.Capabilities{
				AllowScript:      true,
				PluginIdentifier: secIdentifier,
				Functions: []*ssepb.FunctionDefinition{{
					Name: "Echo", FunctionId: 0, FunctionType: ssepb.FunctionType_TENSOR, ReturnType: ssepb.DataType_NUMERIC,
					Params: []*ssepb.Parameter{{Name: "x", DataType: ssepb.DataType_NUMERIC}},
				}},
			}, nil
		},
		Execute: echo(&p.executes),
		Script:  echo(&p.scripts),
	})
	return p
}

// secStream opens a streaming call with md, sends bundles, half-closes and
// returns the bundles received and the call's status.
func secStream(ctx context.Context, open func(context.Context, ...grpc.CallOption) (grpc.BidiStreamingClient[ssepb.BundledRows, ssepb.BundledRows], error),
	md metadata.MD, bundles ...*ssepb.BundledRows) ([]*ssepb.BundledRows, error) {
	ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(ctx, md), secWait)
	defer cancel()
	stream, err := open(ctx)
	if err != nil {
		return nil, err
	}
	for _, bundle := range bundles {
		if err := stream.Send(bundle); err != nil {
			break // the status comes from Recv
		}
	}
	if err := stream.CloseSend(); err != nil {
		return nil, err
	}
	var received []*ssepb.BundledRows
	for {
		bundle, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return received, nil
		}
		if err != nil {
			return received, err
		}
		received = append(received, bundle)
	}
}

// secScriptMetadata returns the headers of an EvaluateScript call of a
// ScriptEval with one numeric parameter, from app and user.
func secScriptMetadata(t *testing.T, script, app, user string) metadata.MD {
	t.Helper()
	md, err := ssepb.ScriptCallMetadata(&ssepb.ScriptRequestHeader{
		Script:       script,
		FunctionType: ssepb.FunctionType_SCALAR,
		ReturnType:   ssepb.DataType_NUMERIC,
		Params:       []*ssepb.Parameter{{Name: "x", DataType: ssepb.DataType_NUMERIC}},
	}, &ssepb.CommonRequestHeader{AppId: app, UserId: user, Cardinality: 2})
	if err != nil {
		t.Fatal(err)
	}
	return md
}

// secFunctionMetadata returns the headers of an ExecuteFunction call of
// function 0 that announces cardinality rows.
func secFunctionMetadata(t *testing.T, cardinality int64) metadata.MD {
	t.Helper()
	md, err := ssepb.FunctionCallMetadata(0, &ssepb.CommonRequestHeader{AppId: "app", UserId: "user", Cardinality: cardinality})
	if err != nil {
		t.Fatal(err)
	}
	return md
}

// secCheckStatus checks a call's code and that its message contains each
// of parts.
func secCheckStatus(t *testing.T, what string, err error, want codes.Code, parts ...string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != want {
		t.Errorf("%s code = %v (%q), want %v", what, st.Code(), st.Message(), want)
		return
	}
	for _, part := range parts {
		if !strings.Contains(st.Message(), part) {
			t.Errorf("%s message = %q, want it to contain %q", what, st.Message(), part)
		}
	}
}

// secCheckLogClean checks that the gateway's log holds no private key and
// none of the texts given, such as script text.
func secCheckLogClean(t *testing.T, gw *ssetest.Gateway, texts ...string) {
	t.Helper()
	log := gw.Logs.String()
	for _, text := range append([]string{"PRIVATE KEY"}, texts...) {
		if strings.Contains(log, text) {
			t.Errorf("gateway log contains %q, want it never logged; log:\n%s", text, log)
		}
	}
}

// secClientWithURI writes a client folder whose certificate, signed by
// the set's CA, has the common name commonName and uri as its only
// subjectAltName. tlsutil.Authority.Issue makes no URI subjectAltNames.
func secClientWithURI(t *testing.T, certs *ssetest.Certs, commonName, uri string) string {
	t.Helper()
	parsed, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	return certs.TemplateDir(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: commonName},
		NotBefore:   time.Now().Add(-time.Hour),
		NotAfter:    time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{parsed},
	}, tlsutil.ClientCertFile, tlsutil.ClientKeyFile)
}

// secSPKIHash returns the allow_clients entry of a client folder's
// certificate by its public key: "sha256:" and the SHA-256 of its
// SubjectPublicKeyInfo in hex.
func secSPKIHash(t *testing.T, clientDir string) string {
	t.Helper()
	files := tlsutil.ClientFilesInDir(clientDir, "", "", "")
	cfg, err := files.ClientConfig("localhost")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(cfg.Certificates[0].Leaf.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// TestAllowClients checks that an engine with allow_clients serves a
// client listed by its certificate's common name, DNS or URI
// subjectAltName, or public key hash. Every other client gets
// PermissionDenied before the plugin is called, and one log line shows
// what it presented.
func TestAllowClients(t *testing.T) {
	certs := ssetest.NewCerts(t)
	byName := certs.ClientDir(t, nil, tlsutil.LeafRequest{CommonName: "qlik-prod"})
	byDNS := certs.ClientDir(t, nil, tlsutil.LeafRequest{CommonName: "qlik-dns", Hosts: []string{"qlik-node1.example.test"}})
	byURI := secClientWithURI(t, certs, "qlik-uri", "spiffe://example.test/qlik/node2")
	byKey := certs.ClientDir(t, nil, tlsutil.LeafRequest{CommonName: "qlik-key"})
	intruder := certs.ClientDir(t, nil, tlsutil.LeafRequest{CommonName: "intruder", Hosts: []string{"intruder.example.test"}})

	tests := []struct {
		name   string
		allow  []string
		client string
		// wantDenied lists what the denial must show of the client; nil
		// means the call is served.
		wantDenied []string
	}{
		{name: "common name", allow: []string{"qlik-prod"}, client: byName},
		{name: "DNS subjectAltName", allow: []string{"other", "qlik-node1.example.test"}, client: byDNS},
		{name: "URI subjectAltName", allow: []string{"spiffe://example.test/qlik/node2"}, client: byURI},
		{name: "public key hash", allow: []string{secSPKIHash(t, byKey)}, client: byKey},
		// Validation accepts upper-case hex, and the pin must still match.
		{name: "public key hash in upper case", allow: []string{"sha256:" + strings.ToUpper(strings.TrimPrefix(secSPKIHash(t, byKey), "sha256:"))}, client: byKey},
		{
			name:       "client not listed",
			allow:      []string{"qlik-prod", "qlik-node1.example.test", secSPKIHash(t, byKey)},
			client:     intruder,
			wantDenied: []string{"intruder", "intruder.example.test", secSPKIHash(t, intruder)},
		},
		{
			name:       "common name in another case",
			allow:      []string{"QLIK-PROD"},
			client:     byName,
			wantDenied: []string{"qlik-prod"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plugin := startSecPlugin(t)
			engine := ssetest.Engine(plugin.Addr)
			engine.AllowClients = tt.allow
			gw := ssetest.StartGateway(t, &config.Config{
				Listeners: []config.Listener{ssetest.Listen("R", &config.ServerTLS{Dir: certs.GatewayDir})},
				Engines:   map[string]*config.Engine{"R": engine},
			})
			client := ssetest.DialTLS(t, gw.Addrs[0], tt.client, "localhost")
			ctx, cancel := context.WithTimeout(testContext(t), secWait)
			defer cancel()
			capabilities, err := client.GetCapabilities(ctx, &ssepb.Empty{})

			if tt.wantDenied == nil {
				if err != nil {
					t.Fatalf("GetCapabilities() error = %v, want nil", err)
				}
				if got := capabilities.GetPluginIdentifier(); got != secIdentifier {
					t.Errorf("GetCapabilities().PluginIdentifier = %q, want %q", got, secIdentifier)
				}
				if got := plugin.capabilities.Load(); got != 1 {
					t.Errorf("plugin calls = %d, want 1", got)
				}
				return
			}

			secCheckStatus(t, "GetCapabilities()", err, codes.PermissionDenied, append([]string{"allow_clients"}, tt.wantDenied...)...)
			if got := plugin.capabilities.Load(); got != 0 {
				t.Errorf("plugin calls = %d, want 0", got)
			}
			record := gw.Logs.WaitFor(t, "call", secWait, func(r map[string]any) bool { return r["code"] == codes.PermissionDenied.String() })
			for _, part := range tt.wantDenied {
				if message, _ := record["error"].(string); !strings.Contains(message, part) {
					t.Errorf("call record error = %q, want it to show %q", message, part)
				}
			}
			presented, lines := tt.wantDenied[0], 0
			for line := range strings.SplitSeq(gw.Logs.String(), "\n") {
				if strings.Contains(line, presented) {
					lines++
				}
			}
			if lines != 1 {
				t.Errorf("gateway log names %q on %d lines, want 1; log:\n%s", presented, lines, gw.Logs)
			}
			secCheckLogClean(t, gw)
		})
	}
}

// TestAllowClientsPlaintext checks that a plaintext caller, which has no
// certificate and so no identity, is denied by an engine with
// allow_clients.
func TestAllowClientsPlaintext(t *testing.T) {
	plugin := startSecPlugin(t)
	engine := ssetest.Engine(plugin.Addr)
	engine.AllowClients = []string{"qlik-prod"}
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", nil)},
		Engines:   map[string]*config.Engine{"R": engine},
	})
	client := ssetest.Dial(t, gw.Addrs[0])
	ctx, cancel := context.WithTimeout(testContext(t), secWait)
	defer cancel()
	_, err := client.GetCapabilities(ctx, &ssepb.Empty{})
	secCheckStatus(t, "GetCapabilities()", err, codes.PermissionDenied, "allow_clients", "no certificate")
	_, err = secStream(testContext(t), client.ExecuteFunction, secFunctionMetadata(t, 1), ssetest.NumericBundle(1, 1))
	secCheckStatus(t, "ExecuteFunction()", err, codes.PermissionDenied, "allow_clients", "no certificate")
	if got := plugin.capabilities.Load() + plugin.executes.Load(); got != 0 {
		t.Errorf("plugin calls = %d, want 0", got)
	}
}

// secScriptPath starts a secPlugin as engine R behind a plaintext
// gateway, with the engine changed by tune, and waits until the gateway
// has the plugin's capabilities.
func secScriptPath(t *testing.T, tune func(*config.Engine)) (*secPlugin, *ssetest.Gateway, ssepb.ConnectorClient) {
	t.Helper()
	plugin := startSecPlugin(t)
	engine := ssetest.FailFast(ssetest.Engine(plugin.Addr))
	engine.ProbeInterval = 200 * time.Millisecond
	tune(engine)
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", nil)},
		Engines:   map[string]*config.Engine{"R": engine},
	})
	gw.Logs.WaitFor(t, "capabilities agreed", secWait, nil)
	return plugin, gw, ssetest.Dial(t, gw.Addrs[0])
}

// TestScriptsDeny checks that an engine with scripts: deny rejects
// EvaluateScript with PermissionDenied without calling the plugin. Its
// GetCapabilities returns allowScript false, both from the plugin and
// from the stored capabilities while the plugin is down.
func TestScriptsDeny(t *testing.T) {
	plugin, gw, client := secScriptPath(t, func(e *config.Engine) { e.Scripts = config.ScriptsDeny })
	const script = "system('rm -rf /tmp/deny-marker')"

	_, err := secStream(testContext(t), client.EvaluateScript, secScriptMetadata(t, script, "app", "user"), ssetest.NumericBundle(2, 1))
	secCheckStatus(t, "EvaluateScript()", err, codes.PermissionDenied, "scripts: deny")
	if got := plugin.scripts.Load(); got != 0 {
		t.Errorf("plugin EvaluateScript calls = %d, want 0", got)
	}

	ctx, cancel := context.WithTimeout(testContext(t), secWait)
	defer cancel()
	capabilities, err := client.GetCapabilities(ctx, &ssepb.Empty{})
	if err != nil {
		t.Fatalf("GetCapabilities() error = %v, want nil", err)
	}
	if capabilities.GetAllowScript() {
		t.Error("GetCapabilities().AllowScript = true from the plugin, want false")
	}
	if got := len(capabilities.GetFunctions()); got != 1 {
		t.Errorf("GetCapabilities() functions = %d, want the plugin's 1", got)
	}
	if got := plugin.capabilities.Load(); got != 1 {
		t.Errorf("plugin GetCapabilities calls = %d, want 1", got)
	}
	// The bytes recorded are those the client got, not the plugin's.
	record := gw.Logs.WaitFor(t, "call", secWait, func(r map[string]any) bool {
		return r["method"] == "/qlik.sse.Connector/GetCapabilities"
	})
	if got, want := record["bytes_out"], float64(proto.Size(capabilities)); got != want {
		t.Errorf("GetCapabilities record bytes_out = %v, want %v, the size of the answer without allowScript", got, want)
	}

	// Stop the plugin. Once the probes find it down, the gateway returns
	// the stored capabilities, which must not offer scripts either.
	plugin.Server.Stop()
	// The gateway returns the stored capabilities once the engine has no
	// ready connection, which it does not log, so only a call shows it.
	deadline := time.Now().Add(secWait)
	for {
		ctx, cancel := context.WithTimeout(testContext(t), secWait)
		capabilities, err = client.GetCapabilities(ctx, &ssepb.Empty{})
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GetCapabilities() with the plugin down = %v after %v, want an answer from known capabilities", err, secWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := capabilities.GetPluginIdentifier(); got != secIdentifier {
		t.Errorf("GetCapabilities().PluginIdentifier with the plugin down = %q, want %q", got, secIdentifier)
	}
	if capabilities.GetAllowScript() {
		t.Error("GetCapabilities().AllowScript = true with the plugin down, want false")
	}
	if got := plugin.capabilities.Load(); got != 1 {
		t.Errorf("plugin GetCapabilities calls = %d, want still 1", got)
	}
	secCheckLogClean(t, gw, script)
}

// TestScriptsAudit checks that an engine with scripts: audit runs a
// script and logs one "script call" record with the app, the user hashed
// as redaction does by default, the script's length and SHA-256, and its
// text only with audit_text: true.
func TestScriptsAudit(t *testing.T) {
	const script = "q.audit_marker <- sum(args[[1]])"
	sum := sha256.Sum256([]byte(script))
	userSum := sha256.Sum256([]byte("user-42"))

	for _, auditText := range []bool{false, true} {
		name := "without text"
		if auditText {
			name = "with audit_text"
		}
		t.Run(name, func(t *testing.T) {
			plugin, gw, client := secScriptPath(t, func(e *config.Engine) {
				e.Scripts, e.AuditText = config.ScriptsAudit, auditText
			})
			received, err := secStream(testContext(t), client.EvaluateScript, secScriptMetadata(t, script, "app-7", "user-42"), ssetest.NumericBundle(2, 1))
			if err != nil {
				t.Fatalf("EvaluateScript() error = %v, want nil", err)
			}
			if len(received) != 1 {
				t.Errorf("EvaluateScript() bundles = %d, want 1", len(received))
			}
			if got := plugin.scripts.Load(); got != 1 {
				t.Errorf("plugin EvaluateScript calls = %d, want 1", got)
			}

			records := gw.Logs.Records("script call")
			if len(records) != 1 {
				t.Fatalf("got %d script call records, want 1; log:\n%s", len(records), gw.Logs)
			}
			record := records[0]
			want := map[string]any{
				"engine":        "R",
				"function":      "ScriptEval",
				"app_id":        "app-7",
				"user_id":       hex.EncodeToString(userSum[:8]),
				"script_length": float64(len(script)),
				"script_sha256": hex.EncodeToString(sum[:]),
			}
			for key, value := range want {
				if record[key] != value {
					t.Errorf("script call record %s = %v, want %v", key, record[key], value)
				}
			}
			if auditText {
				if got := record["script"]; got != script {
					t.Errorf("script call record script = %v, want %q", got, script)
				}
				return
			}
			if got, ok := record["script"]; ok {
				t.Errorf("script call record script = %v, want no script key", got)
			}
			if strings.Contains(gw.Logs.String(), "user-42") {
				t.Errorf("gateway log contains the user id user-42, want it hashed; log:\n%s", gw.Logs)
			}
			secCheckLogClean(t, gw, script)
		})
	}
}

// TestMaxScriptBytes checks that an engine refuses a script over
// max_script_bytes with ResourceExhausted naming the limit, without
// calling the plugin, and runs one of exactly that size.
func TestMaxScriptBytes(t *testing.T) {
	plugin, gw, client := secScriptPath(t, func(e *config.Engine) { e.MaxScriptBytes = 32 })
	atLimit, overLimit := strings.Repeat("a", 32), strings.Repeat("b", 33)

	_, err := secStream(testContext(t), client.EvaluateScript, secScriptMetadata(t, overLimit, "app", "user"), ssetest.NumericBundle(1, 1))
	secCheckStatus(t, "EvaluateScript() of 33 bytes", err, codes.ResourceExhausted, "max_script_bytes", "33 bytes")
	if got := plugin.scripts.Load(); got != 0 {
		t.Errorf("plugin EvaluateScript calls = %d, want 0", got)
	}

	if _, err := secStream(testContext(t), client.EvaluateScript, secScriptMetadata(t, atLimit, "app", "user"), ssetest.NumericBundle(1, 1)); err != nil {
		t.Errorf("EvaluateScript() of 32 bytes error = %v, want nil", err)
	}
	if got := plugin.scripts.Load(); got != 1 {
		t.Errorf("plugin EvaluateScript calls = %d, want 1", got)
	}
	secCheckLogClean(t, gw, overLimit, atLimit)
}

// TestMaxCardinality checks that a call whose common header announces
// more rows than max_cardinality ends with ResourceExhausted, naming the
// limit and the count, before the client sends any row. The plugin never
// gets it. A call at the limit is served.
func TestMaxCardinality(t *testing.T) {
	plugin, gw, client := secScriptPath(t, func(e *config.Engine) { e.MaxCardinality = 1000 })

	// The client sends no row and keeps its side open: the status must
	// come from the headers alone.
	ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(testContext(t), secFunctionMetadata(t, 1001)), secWait)
	defer cancel()
	stream, err := client.ExecuteFunction(ctx)
	if err != nil {
		t.Fatalf("ExecuteFunction() error = %v", err)
	}
	_, err = stream.Recv()
	secCheckStatus(t, "ExecuteFunction() of 1001 rows", err, codes.ResourceExhausted, "max_cardinality", "1001", "1000")
	if got := plugin.executes.Load(); got != 0 {
		t.Errorf("plugin ExecuteFunction calls = %d, want 0", got)
	}
	record := gw.Logs.WaitFor(t, "call", secWait, func(r map[string]any) bool { return r["code"] == codes.ResourceExhausted.String() })
	if got := record["rows_in"]; got != float64(0) {
		t.Errorf("call record rows_in = %v, want 0", got)
	}

	received, err := secStream(testContext(t), client.ExecuteFunction, secFunctionMetadata(t, 1000), ssetest.NumericBundle(1000, 1))
	if err != nil {
		t.Fatalf("ExecuteFunction() of 1000 rows error = %v, want nil", err)
	}
	if len(received) != 1 {
		t.Errorf("ExecuteFunction() of 1000 rows returned %d bundles, want 1", len(received))
	} else if got := len(received[0].GetRows()); got != 1000 {
		t.Errorf("ExecuteFunction() of 1000 rows returned %d rows, want 1000", got)
	}
	if got := plugin.executes.Load(); got != 1 {
		t.Errorf("plugin ExecuteFunction calls = %d, want 1", got)
	}
}

// TestPlaintextPolicy checks that config.Parse accepts a plaintext
// listener on an address other hosts can reach only with
// insecure_remote: true, and a loopback one without it, and never a
// listener that has neither tls nor insecure.
func TestPlaintextPolicy(t *testing.T) {
	const engines = "\nengines:\n  R:\n    backends: [{address: \"127.0.0.1:50055\"}]\n"
	tests := []struct {
		name      string
		listeners string
		// wantError lists parts of the one error expected; nil means
		// the file is accepted.
		wantError []string
	}{
		{
			name:      "every IPv4 interface without insecure_remote",
			listeners: `[{address: "0.0.0.0:50051", insecure: true}]`,
			wantError: []string{"listeners[0]", `"0.0.0.0:50051"`, "insecure_remote"},
		},
		{
			name:      "every interface without insecure_remote",
			listeners: `[{address: ":50051", insecure: true}]`,
			wantError: []string{"listeners[0]", "insecure_remote"},
		},
		{
			name:      "every IPv6 interface without insecure_remote",
			listeners: `[{address: "[::]:50051", insecure: true}]`,
			wantError: []string{"listeners[0]", "insecure_remote"},
		},
		{
			name:      "every IPv4 interface with insecure_remote",
			listeners: `[{address: "0.0.0.0:50051", insecure: true, insecure_remote: true}]`,
		},
		{
			name:      "loopback",
			listeners: `[{address: "127.0.0.1:50051", insecure: true}]`,
		},
		{
			name:      "localhost",
			listeners: `[{address: "localhost:50051", insecure: true}]`,
		},
		{
			name:      "neither tls nor insecure",
			listeners: `[{address: "127.0.0.1:50051"}]`,
			wantError: []string{"listeners[0]", "no tls section", "insecure: true"},
		},
		{
			name:      "insecure_remote alone",
			listeners: `[{address: "0.0.0.0:50051", insecure_remote: true}]`,
			wantError: []string{"listeners[0]", "no tls section"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte("listeners: "+tt.listeners+engines), nil)
			if tt.wantError == nil {
				if err != nil {
					t.Fatalf("Parse() error = %v, want nil", err)
				}
				if got := len(cfg.Listeners); got != 1 {
					t.Errorf("Parse() listeners = %d, want 1", got)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse() = nil error, want one containing %q", tt.wantError)
			}
			if lines := strings.Split(err.Error(), "\n"); len(lines) != 1 {
				t.Errorf("Parse() error = %d lines, want 1: %q", len(lines), err)
			}
			for _, part := range tt.wantError {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("Parse() error = %q, want it to contain %q", err, part)
				}
			}
		})
	}
}

// TestPlaintextListenerWarns checks that a plaintext listener logs one
// warning with its address when it starts, and a mutual TLS listener
// none.
func TestPlaintextListenerWarns(t *testing.T) {
	const message = "plaintext listener: Qlik's ids and rows cross it unencrypted"
	certs := ssetest.NewCerts(t)
	plugin := startSecPlugin(t)
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{
			ssetest.Listen("R", nil),
			ssetest.Listen("R", &config.ServerTLS{Dir: certs.GatewayDir}),
		},
		Engines: map[string]*config.Engine{"R": ssetest.Engine(plugin.Addr)},
	})

	records := gw.Logs.Records(message)
	if len(records) != 1 {
		t.Fatalf("got %d %q records, want 1; log:\n%s", len(records), message, gw.Logs)
	}
	if got := records[0]["level"]; got != "WARN" {
		t.Errorf("record level = %v, want WARN", got)
	}
	if got := records[0]["address"]; got != gw.Addrs[0] {
		t.Errorf("record address = %v, want the plaintext listener %s", got, gw.Addrs[0])
	}
	secCheckLogClean(t, gw)
}

// TestPlaintextListenerWithAllowClientsWarns checks the start-up warning
// for a plaintext listener whose engine admits only some client
// certificates: every call there is refused, since none can arrive.
func TestPlaintextListenerWithAllowClientsWarns(t *testing.T) {
	const message = "plaintext listener for an engine with allow_clients: no client certificate can arrive there, so every call on it is rejected"
	plugin := startSecPlugin(t)
	engine := ssetest.Engine(plugin.Addr)
	engine.AllowClients = []string{"qlik-client"}
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", nil)},
		Engines:   map[string]*config.Engine{"R": engine},
	})

	records := gw.Logs.Records(message)
	if len(records) != 1 {
		t.Fatalf("got %d %q records, want 1; log:\n%s", len(records), message, gw.Logs)
	}
	if got := records[0]["engine"]; got != "R" {
		t.Errorf("record engine = %v, want R", got)
	}
}

// TestUncoveredHostWarns checks the start-up warning for an engine host
// name that the TLS listener's certificate does not list: Qlik's calls by
// that name would fail the handshake, out of the gateway's sight.
func TestUncoveredHostWarns(t *testing.T) {
	const message = "engine host name missing from the gateway's certificate"
	certs := ssetest.NewCerts(t)
	plugin := startSecPlugin(t)
	covered, missing := ssetest.Engine(plugin.Addr), ssetest.Engine(plugin.Addr)
	covered.Hosts = []string{"localhost"}
	missing.Hosts = []string{"py.gateway.example"}
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", &config.ServerTLS{Dir: certs.GatewayDir})},
		Engines:   map[string]*config.Engine{"R": covered, "Py": missing},
	})

	records := gw.Logs.Records(message)
	if len(records) != 1 {
		t.Fatalf("got %d %q records, want 1; log:\n%s", len(records), message, gw.Logs)
	}
	warning, _ := records[0]["warning"].(string)
	if !strings.HasPrefix(warning, "engines.Py.hosts: py.gateway.example is not a name in the certificate of listeners[0].tls") {
		t.Errorf("record warning = %q, want it to name engine Py's host and listeners[0]", warning)
	}

	// A reload whose file points the listener at a certificate that lists
	// the name changes nothing until a restart: the running listener
	// still lacks it, so the warning comes again.
	lists := ssetest.NewCerts(t).ServerDir(t, tlsutil.LeafRequest{Hosts: []string{"localhost", "py.gateway.example"}})
	next := *gw.Config()
	next.Listeners = []config.Listener{ssetest.Listen("R", &config.ServerTLS{Dir: lists})}
	if _, err := gw.Reload(&next); err != nil {
		t.Fatalf("Reload() = %v", err)
	}
	if got := len(gw.Logs.Records(message)); got != 2 {
		t.Errorf("got %d %q records after a reload that changes only the listener's certificate, want 2; log:\n%s", got, message, gw.Logs)
	}
}
