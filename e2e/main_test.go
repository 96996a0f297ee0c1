package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"

	"github.com/ssegw/ssegw/internal/ssetest"
)

// TestMain fails the package when a test leaves goroutines behind, and
// deletes the programs that the tests built.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		ssetest.RemoveBinaries()
		os.Exit(code)
	}))
}

// gatewayProcess is `ssegw serve` running as a process of the test.
type gatewayProcess struct {
	*ssetest.Process
	// Addrs are the listeners' bound addresses, in configuration order.
	Addrs []string
}

// startGatewayProcess writes cfg as the YAML configuration file, runs
// `ssegw serve` with it, and waits until every listener listens. cfg
// leaves out the log section, because the bound addresses are read from
// the gateway's JSON log. The process is killed when the test ends.
func startGatewayProcess(t *testing.T, cfg map[string]any) *gatewayProcess {
	t.Helper()
	return startGatewayProgram(t, ssetest.Binary(t, "./cmd/ssegw"), cfg)
}

// startGatewayProgram is startGatewayProcess with the ssegw program at
// path.
func startGatewayProgram(t *testing.T, path string, cfg map[string]any) *gatewayProcess {
	t.Helper()
	listeners, ok := cfg["listeners"].([]map[string]any)
	if !ok || len(listeners) == 0 {
		t.Fatalf("test configuration: listeners = %T, want a non-empty []map[string]any", cfg["listeners"])
	}
	cfg["log"] = map[string]any{"level": "debug", "format": "json"}
	if _, ok := cfg["admin"]; !ok {
		// Tests in other packages run gateways at the same time.
		cfg["admin"] = map[string]any{"address": "127.0.0.1:0"}
	}
	data, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatalf("encoding the configuration: %v", err)
	}
	file := filepath.Join(t.TempDir(), "ssegw.yaml")
	ssetest.WriteFile(t, file, data)

	p := ssetest.StartProcess(t, path, nil, "serve", "--config", file)
	return &gatewayProcess{Process: p, Addrs: waitListening(t, p, len(listeners), 30*time.Second)}
}

// waitListening waits until the gateway's JSON log on stderr has count
// "listening" records, and returns their addresses in order.
func waitListening(t *testing.T, p *ssetest.Process, count int, timeout time.Duration) []string {
	t.Helper()
	var addrs []string
	p.WaitForStderr(t, fmt.Sprintf(`with "listening" record %d of %d`, count, count), timeout, func(line string) bool {
		var record struct {
			Msg     string `json:"msg"`
			Address string `json:"address"`
		}
		if json.Unmarshal([]byte(line), &record) == nil && record.Msg == "listening" {
			addrs = append(addrs, record.Address)
		}
		return len(addrs) == count
	})
	return addrs
}

// testContext returns a context that ends with the test or after timeout,
// so that a broken build cannot hang the suite.
func testContext(t *testing.T, timeout time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return ctx
}
