package ssetest

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/gateway"
)

// Gateway is a gateway started in the test process.
type Gateway struct {
	*gateway.Gateway
	Logs *Logs
	// Addrs are the listeners' addresses, in configuration order.
	Addrs []string
}

// StartGateway fills in defaults, validates cfg and serves it until the
// test ends. Its log, at debug level unless cfg.Log.Level says otherwise,
// is kept in Logs. The admin listener takes a free port unless cfg names
// one.
func StartGateway(t testing.TB, cfg *config.Config) *Gateway {
	t.Helper()
	return StartGatewayWith(t, cfg, gateway.Options{})
}

// StartGatewayWith is StartGateway with options, such as telemetry
// providers that record spans for the test.
func StartGatewayWith(t testing.TB, cfg *config.Config, opts gateway.Options) *Gateway {
	t.Helper()
	level := slog.LevelDebug
	if cfg.Log.Level != "" {
		if err := level.UnmarshalText([]byte(cfg.Log.Level)); err != nil {
			t.Fatal(err)
		}
	}
	if cfg.Admin.Address == "" {
		cfg.Admin.Address = "127.0.0.1:0" // tests run in parallel
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test configuration: %v", err)
	}
	logs := &Logs{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: level}))
	if opts.UserAgent == "" {
		opts.UserAgent = "ssegw-test"
	}
	g, err := gateway.New(cfg, logger, opts)
	if err != nil {
		t.Fatalf("building gateway: %v", err)
	}
	if err := g.Start(); err != nil {
		t.Fatalf("starting gateway: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g.Shutdown(ctx)
	})
	gw := &Gateway{Gateway: g, Logs: logs}
	for _, addr := range g.Addrs() {
		gw.Addrs = append(gw.Addrs, addr.String())
	}
	return gw
}

// Listen returns a listener section on a free loopback port: plaintext for
// a nil tls, else mutual TLS.
func Listen(engine string, tls *config.ServerTLS) config.Listener {
	return config.Listener{Address: "127.0.0.1:0", Engine: engine, TLS: tls, Insecure: tls == nil}
}

// Engine returns an engine section with plaintext backends at addresses.
func Engine(addresses ...string) *config.Engine {
	engine := &config.Engine{}
	for _, address := range addresses {
		engine.Backends = append(engine.Backends, config.Backend{Address: address})
	}
	return engine
}

// FailFast sets an engine's reconnect_buffer to 0, so that a call fails at
// once while no replica is ready instead of waiting for one, and returns
// the engine.
func FailFast(engine *config.Engine) *config.Engine {
	return ReconnectBuffer(engine, 0)
}

// ReconnectBuffer sets an engine's reconnect_buffer, how long a call waits
// for a ready replica, and returns the engine.
func ReconnectBuffer(engine *config.Engine, wait time.Duration) *config.Engine {
	engine.ReconnectBuffer = &wait
	return engine
}

// Logs collects a JSON log, one record per line.
type Logs struct {
	SyncBuffer
}

// Records returns every record logged so far whose message is msg, or
// every record for an empty msg.
func (l *Logs) Records(msg string) []map[string]any {
	text := l.String()
	var records []map[string]any
	for line := range strings.SplitSeq(text, "\n") {
		if line == "" {
			continue
		}
		var record map[string]any
		if err := json.Unmarshal([]byte(line), &record); err != nil {
			continue
		}
		if msg == "" || record["msg"] == msg {
			records = append(records, record)
		}
	}
	return records
}

// WaitFor waits until match accepts a record with message msg, or fails
// the test after timeout, and returns the matching record. A nil match
// accepts any such record. match is called with each record once, in log
// order, starting with those logged before the call, so it must decide on
// the record alone.
func (l *Logs) WaitFor(t testing.TB, msg string, timeout time.Duration, match func(map[string]any) bool) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var found map[string]any
	_, err := l.waitForLine(ctx, nil, func(line string) bool {
		var record map[string]any
		if json.Unmarshal([]byte(line), &record) != nil || record["msg"] != msg {
			return false
		}
		if match == nil || match(record) {
			found = record
			return true
		}
		return false
	})
	if err != nil {
		t.Fatalf("no %q log record matched within %v; log:\n%s", msg, timeout, l.String())
	}
	return found
}
