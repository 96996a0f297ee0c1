package bench

import (
	"strings"
	"testing"
	"time"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/tlsutil"
)

// TestGatewayConfigYAMLLoads checks that the file written for a gateway
// child loads with the settings it was built from, since config.Load
// reads mapstructure keys that yaml does not know.
func TestGatewayConfigYAMLLoads(t *testing.T) {
	certs, err := tlsutil.WriteSet(t.TempDir(), []string{"127.0.0.1"}, tlsutil.SetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	off := false
	ratio := 1.0
	cfg := &config.Config{
		Listeners: []config.Listener{{Address: "127.0.0.1:0", Engine: "Bench", TLS: &config.ServerTLS{Dir: certs.GatewayDir}}},
		Engines: map[string]*config.Engine{
			"Bench": {Backends: []config.Backend{{Address: "127.0.0.1:50055"}}},
		},
		Limits: config.Limits{MaxMessageSize: 32 << 20},
		Log:    config.Log{Level: "info", Format: "json", AccessLog: &off},
		Telemetry: config.Telemetry{
			Traces: config.TraceExport{Exporter: config.ExporterOTLP, Endpoint: "127.0.0.1:4317", Insecure: true, SamplerRatio: &ratio},
		},
		Admin:        config.Admin{Address: "127.0.0.1:0"},
		DrainTimeout: 2 * time.Second,
	}
	data, err := gatewayConfigYAML(cfg)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := config.Parse(data, nil)
	if err != nil {
		t.Fatalf("config.Parse: %v\nfile:\n%s", err, data)
	}

	checks := []struct {
		name      string
		got, want any
	}{
		{"listener address", loaded.Listeners[0].Address, "127.0.0.1:0"},
		{"listener engine", loaded.Listeners[0].Engine, "Bench"},
		{"listener tls.dir", loaded.Listeners[0].TLS.Dir, certs.GatewayDir},
		{"engine name", loaded.Engine("Bench").Name, "Bench"},
		{"backend", loaded.Engine("Bench").Backends[0].Address, "127.0.0.1:50055"},
		{"max_message_size", loaded.Limits.MaxMessageSize, config.ByteSize(32 << 20)},
		{"access_log", loaded.Log.AccessLogEnabled(), false},
		{"log format", loaded.Log.Format, "json"},
		{"traces exporter", loaded.Telemetry.Traces.Exporter, config.ExporterOTLP},
		{"sampler_ratio", *loaded.Telemetry.Traces.SamplerRatio, 1.0},
		{"drain_timeout", loaded.DrainTimeout, 2 * time.Second},
	}
	for _, check := range checks {
		if check.got != check.want {
			t.Errorf("%s = %v, want %v\nfile:\n%s", check.name, check.got, check.want, data)
		}
	}
	if strings.Contains(string(data), "insecure: false") {
		t.Errorf("the file names a zero value, which should be left to the defaults:\n%s", data)
	}
}

func TestProxyConfigs(t *testing.T) {
	settings := proxySettings{Prefix: "/tmp/prefix", Listen: "127.0.0.1:4000", Plugin: "127.0.0.1:5000", MaxStreams: 1000}
	tests := []struct {
		name  string
		data  func() ([]byte, error)
		wants []string
	}{
		{"nginx", func() ([]byte, error) { return renderProxyConfig(nginxTemplate, settings) }, []string{
			"listen 127.0.0.1:4000 http2;", "server 127.0.0.1:5000;", "grpc_pass grpc://plugin;", "client_max_body_size 0;",
			"keepalive 1024;", "keepalive_requests 1000000000;", "worker_processes 2;", "access_log off;", "http2_max_concurrent_streams 1000;",
			"client_body_temp_path /tmp/prefix/client_body;", "pid /tmp/prefix/nginx.pid;",
		}},
		{"haproxy", func() ([]byte, error) { return renderProxyConfig(haproxyTemplate, settings) }, []string{
			"bind 127.0.0.1:4000 proto h2", "server plugin 127.0.0.1:5000 proto h2", "nbthread 2",
			"tune.h2.max-concurrent-streams 1000", "timeout client 1h", "timeout server 1h",
		}},
		{"tcp-relay", func() ([]byte, error) { return renderProxyConfig(tcpRelayTemplate, settings) }, []string{
			"mode tcp", "bind 127.0.0.1:4000\n", "server plugin 127.0.0.1:5000\n", "nbthread 2", "timeout client 1h",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := tt.data()
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range tt.wants {
				if !strings.Contains(string(data), want) {
					t.Errorf("no %q in the configuration:\n%s", want, data)
				}
			}
		})
	}
}
