package main

import (
	"strings"
	"testing"
)

// TestBenchReferenceRejectsBadAddresses checks that the benchmark's
// reference targets name the flag at fault before they bind anything,
// and never listen beyond loopback.
func TestBenchReferenceRejectsBadAddresses(t *testing.T) {
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
	for _, command := range []string{"go-h2-relay", "grpc-proxy"} {
		for _, tt := range tests {
			t.Run(command+"/"+tt.name, func(t *testing.T) {
				output, err := runCommand(t, append([]string{"bench", command}, tt.args...)...)
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
}
