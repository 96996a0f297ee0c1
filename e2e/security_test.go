package e2e

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/ssepb"
	"github.com/ssegw/ssegw/tlsutil"
)

// pythonPluginName is the start of the pluginIdentifier of qlik_plugin.py
// in these tests.
const pythonPluginName = "py-plugin"

// runCertsInit runs `ssegw certs init` with args and fails the test when
// it fails.
func runCertsInit(t *testing.T, args ...string) {
	t.Helper()
	p := ssetest.StartProcess(t, ssetest.Binary(t, "./cmd/ssegw"), nil, append([]string{"certs", "init"}, args...)...)
	if err := p.Wait(t, time.Minute); err != nil {
		t.Fatalf("ssegw certs init %s: %v\n%s", strings.Join(args, " "), err, p.Stderr())
	}
}

// startPythonPlugin runs qlik_plugin.py with the plugin-style certificate
// folder serverDir on a free loopback port, and returns its address.
func startPythonPlugin(t *testing.T, python, descriptors, serverDir string, flags ...string) (string, *ssetest.Process) {
	t.Helper()
	script, err := filepath.Abs("qlik_plugin.py")
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{script, "--address", "127.0.0.1:0", "--cert-dir", serverDir, "--descriptors", descriptors, "--name", pythonPluginName}, flags...)
	p := ssetest.StartProcess(t, python, nil, args...)
	return strings.TrimSpace(p.WaitForLine(t, "listening on ", time.Minute)), p
}

// echoCall returns an ExecuteFunction call of the Echo function of
// qlik_plugin.py with rows numeric rows in one bundle.
func echoCall(t *testing.T, rows int) qlikCall {
	t.Helper()
	return qlikCall{
		Method:         "ExecuteFunction",
		FunctionHeader: protoJSON(t, &ssepb.FunctionRequestHeader{FunctionId: 0}),
		CommonHeader:   protoJSON(t, &ssepb.CommonRequestHeader{AppId: "e2e-app", UserId: "e2e-user", Cardinality: int64(rows)}),
		Bundles:        []json.RawMessage{protoJSON(t, ssetest.NumericBundle(rows, 1))},
	}
}

// TestPythonWithCertsInit checks certificates made by `ssegw certs init`
// with gRPC's C core on both sides of an `ssegw serve` process. A grpcio
// client, as Qlik, calls the gateway over mutual TLS with the qlik folder,
// checking the address 127.0.0.1 against the gateway's certificate. The
// gateway reaches a grpcio TLS plugin, which listens with the gateway
// folder of a second set and requires a client certificate, with the
// client folder that `certs init --ca` made from that set's CA; the
// plugin reports that certificate's common name.
func TestPythonWithCertsInit(t *testing.T) {
	python := findPython(t)
	front, back := t.TempDir(), t.TempDir()
	gatewayClient := filepath.Join(t.TempDir(), "to-plugin")
	runCertsInit(t, "--out", front, "--hosts", "localhost,127.0.0.1")
	runCertsInit(t, "--out", back, "--hosts", "localhost,127.0.0.1")
	runCertsInit(t, "--ca", filepath.Join(back, tlsutil.CAFolder), "--out", gatewayClient, "--client-name", "ssegw-gateway")

	descriptors := writeDescriptorSet(t)
	plugin, _ := startPythonPlugin(t, python, descriptors, filepath.Join(back, tlsutil.GatewayFolder))
	gw := startGatewayProcess(t, map[string]any{
		"listeners": []map[string]any{{"address": "127.0.0.1:0", "engine": "R", "tls": map[string]any{"dir": filepath.Join(front, tlsutil.GatewayFolder)}}},
		"engines": map[string]any{"R": map[string]any{"backends": []map[string]any{
			{"address": plugin, "tls": map[string]any{"dir": gatewayClient}},
		}}},
	})

	client := qlikClient{python: python, descriptors: descriptors, certDir: filepath.Join(front, tlsutil.QlikFolder), address: gw.Addrs[0]}
	results := client.run(t, qlikCall{Method: "GetCapabilities"}, echoCall(t, 5))
	for _, result := range results {
		if result.Code != "OK" {
			t.Errorf("%s status = %s %q, want OK", result.Method, result.Code, result.Details)
		}
	}
	if results[0].Code == "OK" {
		if got, want := results[0].capabilities(t).GetPluginIdentifier(), pythonPluginName+" CN=ssegw-gateway"; got != want {
			t.Errorf("GetCapabilities pluginIdentifier = %q, want %q", got, want)
		}
	}
	if got := len(results[1].rows(t)); got != 5 {
		t.Errorf("ExecuteFunction rows = %d, want 5", got)
	}
	if strings.Contains(gw.Stderr(), "PRIVATE KEY") {
		t.Errorf("gateway log contains key material; log:\n%s", gw.Stderr())
	}
}

// TestPythonClientDistrustsGateway has a grpcio client, as Qlik, call the
// gateway with the qlik folder of another certificate set, whose
// root_cert.pem did not sign the gateway's certificate: the most common
// mistake in setting up Qlik's certificates. gRPC's C core then closes
// the connection without a TLS alert, so the gateway's log must say what
// to check rather than only that the client went away.
func TestPythonClientDistrustsGateway(t *testing.T) {
	python := findPython(t)
	gatewaySet, otherSet := t.TempDir(), t.TempDir()
	runCertsInit(t, "--out", gatewaySet, "--hosts", "localhost,127.0.0.1")
	runCertsInit(t, "--out", otherSet, "--hosts", "localhost,127.0.0.1")
	plugin := ssetest.StartPlugin(t, &ssetest.Connector{Execute: ssetest.Echo})
	gw := startGatewayProcess(t, map[string]any{
		"listeners": []map[string]any{{"address": "127.0.0.1:0", "engine": "R", "tls": map[string]any{"dir": filepath.Join(gatewaySet, tlsutil.GatewayFolder)}}},
		"engines":   map[string]any{"R": map[string]any{"backends": []map[string]any{{"address": plugin.Addr}}}},
	})

	client := qlikClient{python: python, descriptors: writeDescriptorSet(t), certDir: filepath.Join(otherSet, tlsutil.QlikFolder), address: gw.Addrs[0]}
	results := client.run(t, qlikCall{Method: "GetCapabilities"})
	if results[0].Code != "UNAVAILABLE" {
		t.Errorf("GetCapabilities with another set's root_cert.pem = %s %q, want UNAVAILABLE", results[0].Code, results[0].Details)
	}
	waitForRecord(t, gw, "TLS handshake refused")
	record := gatewayRecords(gw.Process, "TLS handshake refused")[0]
	if record["reason"] != string(tlsutil.FailureClosed) {
		t.Errorf("refused handshake reason = %v, want %q", record["reason"], tlsutil.FailureClosed)
	}
	if hint, _ := record["hint"].(string); !strings.Contains(hint, "root_cert.pem") {
		t.Errorf("refused handshake hint = %q, want it to point at the client's root_cert.pem", hint)
	}
}

// pythonPluginBehindGateway starts qlik_plugin.py with flags behind an
// `ssegw serve` process whose engine R has the keys of engine besides its
// backend, both hops with mutual TLS of one certificate set. It returns a
// grpcio client of the gateway and the plugin's process.
func pythonPluginBehindGateway(t *testing.T, engine map[string]any, flags ...string) (qlikClient, *ssetest.Process) {
	t.Helper()
	python := findPython(t)
	certs := t.TempDir()
	runCertsInit(t, "--out", certs, "--hosts", "localhost,127.0.0.1")
	descriptors := writeDescriptorSet(t)
	address, plugin := startPythonPlugin(t, python, descriptors, filepath.Join(certs, tlsutil.GatewayFolder), flags...)
	settings := map[string]any{"backends": []map[string]any{
		{"address": address, "tls": map[string]any{"dir": filepath.Join(certs, tlsutil.QlikFolder)}},
	}}
	maps.Copy(settings, engine)
	gw := startGatewayProcess(t, map[string]any{
		"listeners": []map[string]any{{"address": "127.0.0.1:0", "engine": "R", "tls": map[string]any{"dir": filepath.Join(certs, tlsutil.GatewayFolder)}}},
		"engines":   map[string]any{"R": settings},
	})
	return qlikClient{python: python, descriptors: descriptors, certDir: filepath.Join(certs, tlsutil.QlikFolder), address: gw.Addrs[0]}, plugin
}

// TestPythonPluginCancelNotReplayed has a grpcio plugin cancel each call
// after its first bundle. The plugin has run the call, so the gateway must
// not send it again, and Qlik must get CANCELLED, as on a direct
// connection, not the UNAVAILABLE of a plugin that could not be reached.
func TestPythonPluginCancelNotReplayed(t *testing.T) {
	client, plugin := pythonPluginBehindGateway(t, nil, "--cancel")
	result := client.run(t, echoCall(t, 5))[0]
	if result.Code != "CANCELLED" {
		t.Errorf("ExecuteFunction status = %s %q, want CANCELLED", result.Code, result.Details)
	}
	if got := strings.Count(plugin.Stdout(), "cancelling a call"); got != 1 {
		t.Errorf("the plugin ran the call %d times, want once; its output:\n%s", got, plugin.Stdout())
	}
}

// TestPythonPluginRequestTimeout has a grpcio plugin hold a call past the
// engine's request_timeout. gRPC's C core ends such a call with its own
// DEADLINE_EXCEEDED status, "Deadline Exceeded", where grpc-go resets the
// stream, so the status must still say that request_timeout ended the
// call.
func TestPythonPluginRequestTimeout(t *testing.T) {
	client, _ := pythonPluginBehindGateway(t, map[string]any{"request_timeout": "1s"}, "--hold")
	// The plugin's status can come a fraction of a millisecond before the
	// gateway's own deadline, as in about one call of five: five calls.
	call := echoCall(t, 5)
	for i, result := range client.run(t, call, call, call, call, call) {
		if result.Code != "DEADLINE_EXCEEDED" || !strings.Contains(result.Details, "request_timeout") {
			t.Errorf("call %d: ExecuteFunction status = %s %q, want DEADLINE_EXCEEDED naming request_timeout", i, result.Code, result.Details)
		}
	}
}

// waitForRecord waits until the gateway's JSON log holds a record with
// message msg, or fails the test after a minute.
func waitForRecord(t *testing.T, gw *gatewayProcess, msg string) {
	t.Helper()
	gw.WaitForStderr(t, fmt.Sprintf("with a %q record", msg), time.Minute, func(line string) bool {
		var record struct {
			Msg string `json:"msg"`
		}
		return json.Unmarshal([]byte(line), &record) == nil && record.Msg == msg
	})
}

// qlikScriptFolders writes a plugin folder and a client folder as Qlik's
// usual OpenSSL script makes them: RSA keys in PKCS#1, and the server's
// addresses written as DNS names only.
func qlikScriptFolders(t *testing.T) (serverDir, clientDir string) {
	t.Helper()
	root, err := tlsutil.NewRootCA("sse_root", 10*365*24*time.Hour, tlsutil.KeyRSA2048)
	if err != nil {
		t.Fatal(err)
	}

	serverCert, serverKey, err := root.Issue(tlsutil.LeafRequest{
		CommonName: "sse_server",
		Hosts:      []string{"localhost", "127.0.0.1"},
		IPsAsDNS:   true,
		Usage:      []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyType:    tlsutil.KeyRSA2048,
		PKCS1:      true,
	})
	if err != nil {
		t.Fatal(err)
	}
	clientCert, clientKey, err := root.Issue(tlsutil.LeafRequest{
		CommonName: "sse_client",
		Usage:      []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		KeyType:    tlsutil.KeyRSA2048,
		PKCS1:      true,
	})
	if err != nil {
		t.Fatal(err)
	}

	write := func(files map[string][]byte) string {
		dir := t.TempDir()
		for name, data := range files {
			ssetest.WriteFile(t, filepath.Join(dir, name), data)
		}
		return dir
	}
	rootPEM := tlsutil.EncodeCert(root.Cert)
	serverDir = write(map[string][]byte{tlsutil.RootCertFile: rootPEM, tlsutil.ServerCertFile: serverCert, tlsutil.ServerKeyFile: serverKey})
	clientDir = write(map[string][]byte{tlsutil.RootCertFile: rootPEM, tlsutil.ClientCertFile: clientCert, tlsutil.ClientKeyFile: clientKey})
	return serverDir, clientDir
}

// TestPythonPluginQlikScriptCertificates checks a grpcio TLS plugin with a
// folder made as Qlik's usual OpenSSL script makes it. Its certificate
// lists 127.0.0.1 only as a DNS name, so the gateway cannot verify it by
// the address, and the error names server_name as the fix. With
// server_name set to one of its DNS names, the gateway reaches the plugin
// with the script's PKCS#1 client key.
func TestPythonPluginQlikScriptCertificates(t *testing.T) {
	python := findPython(t)
	serverDir, clientDir := qlikScriptFolders(t)
	key, err := os.ReadFile(filepath.Join(clientDir, tlsutil.ClientKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(key), "-----BEGIN RSA PRIVATE KEY-----") {
		t.Fatalf("client key starts with %q, want a PKCS#1 key", strings.SplitN(string(key), "\n", 2)[0])
	}
	descriptors := writeDescriptorSet(t)
	plugin, _ := startPythonPlugin(t, python, descriptors, serverDir)

	tests := []struct {
		name       string
		serverName string
		// waitFor is the gateway's log message that shows the replica's
		// state has been found before the call.
		waitFor  string
		wantCode string
		// wantIn lists parts of the details (for an error) or of the
		// pluginIdentifier (for OK).
		wantIn []string
	}{
		{name: "without server_name", waitFor: "replica failing", wantCode: "UNAVAILABLE", wantIn: []string{"IP SANs", "server_name"}},
		{name: "with server_name", serverName: "localhost", waitFor: "capabilities agreed", wantCode: "OK", wantIn: []string{pythonPluginName + " CN=sse_client"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			backendTLS := map[string]any{"dir": clientDir}
			if tt.serverName != "" {
				backendTLS["server_name"] = tt.serverName
			}
			gw := startGatewayProcess(t, map[string]any{
				"listeners": []map[string]any{{"address": "127.0.0.1:0", "engine": "R", "insecure": true}},
				"engines": map[string]any{"R": map[string]any{
					// Fail at once while the plugin is unreachable.
					"reconnect_buffer": "0s",
					"backends":         []map[string]any{{"address": plugin, "tls": backendTLS}},
				}},
			})
			waitForRecord(t, gw, tt.waitFor)
			client := qlikClient{python: python, descriptors: descriptors, address: gw.Addrs[0]}
			result := client.run(t, qlikCall{Method: "GetCapabilities"})[0]
			if result.Code != tt.wantCode {
				t.Fatalf("GetCapabilities status = %s %q, want %s", result.Code, result.Details, tt.wantCode)
			}
			field, text := "details", result.Details
			if result.Code == "OK" {
				capabilities := &ssepb.Capabilities{}
				if err := protojson.Unmarshal(result.Capabilities, capabilities); err != nil {
					t.Fatal(err)
				}
				field, text = "pluginIdentifier", capabilities.GetPluginIdentifier()
			}
			for _, want := range tt.wantIn {
				if !strings.Contains(text, want) {
					t.Errorf("GetCapabilities %s = %q, want it to contain %q", field, text, want)
				}
			}
		})
	}
}
