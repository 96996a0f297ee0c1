package deploy

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/tlsutil"
)

// repoRoot is the repository's root, seen from this package's folder,
// where go test runs.
const repoRoot = ".."

// configShape is the part of a gateway configuration that the tests
// read before loading it.
type configShape struct {
	Listeners []struct {
		TLS *struct {
			Dir string `yaml:"dir"`
		} `yaml:"tls"`
	} `yaml:"listeners"`
}

// readConfigShape reads the listeners of a gateway configuration as the
// file gives them, before SSEGW_ variables replace anything.
func readConfigShape(t *testing.T, data []byte) configShape {
	t.Helper()
	var shape configShape
	if err := yaml.Unmarshal(data, &shape); err != nil {
		t.Fatalf("reading the listeners of the configuration: %v", err)
	}
	return shape
}

// loadGatewayConfig parses a gateway configuration as ssegw serve would,
// with every listener's tls.dir replaced by a folder of fresh
// certificates: the folders the files name exist only where the gateway
// runs. environ adds SSEGW_ variables. Backends' TLS folders are left as
// they are.
func loadGatewayConfig(t *testing.T, data []byte, environ ...string) (*config.Config, error) {
	t.Helper()
	set, err := tlsutil.WriteSet(t.TempDir(), []string{"localhost", "127.0.0.1"}, tlsutil.SetOptions{})
	if err != nil {
		t.Fatalf("making a certificate set: %v", err)
	}
	return config.Parse(data, append(environ, listenerTLSEnv(readConfigShape(t, data), set.GatewayDir)...))
}

// listenerTLSEnv returns the SSEGW_ variables that set the tls.dir of
// every listener with a tls section to dir.
func listenerTLSEnv(shape configShape, dir string) []string {
	var environ []string
	for i, listener := range shape.Listeners {
		if listener.TLS != nil {
			environ = append(environ, fmt.Sprintf("%sLISTENERS_%d_TLS_DIR=%s", config.EnvPrefix, i, dir))
		}
	}
	return environ
}

// readFile returns the content of a file of the repository, by its path
// from the repository's root.
func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, path))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// splitHostPort splits address into its host and numeric port.
func splitHostPort(t *testing.T, address string) (string, int) {
	t.Helper()
	host, portText, err := net.SplitHostPort(address)
	if err != nil {
		t.Fatalf("address %q: %v", address, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		t.Fatalf("address %q: port is not a number: %v", address, err)
	}
	return host, port
}

// TestStateDirFromUnitEnvironment checks that the systemd unit's
// SSEGW_STATE_DIR reaches the gateway whether the configuration file sets
// state_dir, as the repository's example does, or not.
func TestStateDirFromUnitEnvironment(t *testing.T) {
	stateDir := readUnit(t).environment()[config.EnvPrefix+"STATE_DIR"]
	if stateDir == "" {
		t.Fatal("the unit sets no SSEGW_STATE_DIR")
	}

	tests := []struct {
		name string
		data []byte
	}{
		{"repository example", readFile(t, "config.yaml")},
		{"without state_dir", []byte(`
listeners:
  - address: ":50051"
    engine: Example
    tls: { dir: certs/gateway }
engines:
  Example:
    backends: [{ address: "127.0.0.1:50055" }]
`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := loadGatewayConfig(t, tt.data, config.EnvPrefix+"STATE_DIR="+stateDir)
			if err != nil {
				t.Fatalf("loading with the unit's environment:\n%v", err)
			}
			if cfg.StateDir != stateDir {
				t.Errorf("state_dir = %q, want %q from the unit's environment", cfg.StateDir, stateDir)
			}
		})
	}
}
