package main

import (
	"strings"
	"testing"
)

// TestBenchRelayRejectsBadAddresses checks that the benchmark's relay
// names the flag at fault before it binds anything, and never listens
// beyond loopback.
func TestBenchRelayRejectsBadAddresses(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no backend", nil, "--backend is required"},
		{"backend without port", []string{"--backend", "bogus"}, `--backend "bogus" is not a host:port`},
		{"listen without port", []string{"--backend", "127.0.0.1:1", "--listen", "bogus"}, `--listen "bogus" is not a host:port`},
		{"listen on every interface", []string{"--backend", "127.0.0.1:1", "--listen", ":0"}, `--listen ":0" is not a loopback address`},
		{"listen empty", []string{"--backend", "127.0.0.1:1", "--listen", ""}, `--listen "" is not a host:port`},
		{"listen on a remote host", []string{"--backend", "127.0.0.1:1", "--listen", "192.0.2.1:0"}, `--listen "192.0.2.1:0" is not a loopback address`},
		{"listen on an invalid port", []string{"--backend", "127.0.0.1:1", "--listen", "127.0.0.1:99999"}, "--listen 127.0.0.1:99999: listen tcp: address 99999: invalid port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			output, err := runCommand(t, append([]string{"bench", "go-h2-relay"}, tt.args...)...)
			if err == nil {
				t.Fatalf("succeeded, want an error; output:\n%s", output)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %q, want it to contain %q", err, tt.want)
			}
			if strings.Contains(output, "listening on") {
				t.Errorf("output = %q, want nothing bound", output)
			}
		})
	}
}
