package tlsutil_test

import (
	"strings"
	"testing"

	"github.com/ssegw/ssegw/tlsutil"
)

// TestParseHost checks that ParseHost returns DNS names and wildcards as
// written and IP addresses without brackets, IPv4-mapped ones as IPv4. It
// rejects other hosts with an error that names the problem.
func TestParseHost(t *testing.T) {
	valid := []struct {
		name, want string
	}{
		{"localhost", "localhost"},
		{"gw.example.com", "gw.example.com"},
		{"GW-1.Example.com", "GW-1.Example.com"},
		{"*.example.com", "*.example.com"},
		{"under_score.example", "under_score.example"},
		{"xn--bcher-kva.example", "xn--bcher-kva.example"},
		{"127.0.0.1", "127.0.0.1"},
		{"::1", "::1"},
		{"[::1]", "::1"},
		{"[2001:db8::1]", "2001:db8::1"},
		{"::ffff:10.0.0.5", "10.0.0.5"},
	}
	for _, tt := range valid {
		got, err := tlsutil.ParseHost(tt.name)
		if err != nil || got != tt.want {
			t.Errorf("ParseHost(%q) = %q, %v; want %q", tt.name, got, err, tt.want)
		}
	}

	invalid := []struct {
		name, want string
	}{
		{"", "empty"},
		{"127.0.0.1:50051", "has a port; give the host alone: 127.0.0.1"},
		{"[::1]:50051", "has a port; give the host alone: ::1"},
		{"gw.example:443", "has a port; give the host alone: gw.example"},
		{"https://gw.example", "a URL; give its host alone: gw.example"},
		{"bad host!", "not a valid DNS name: ' ' is not allowed"},
		{"bücher.example", "not a valid DNS name: 'ü' is not allowed"},
		{"300.1.1.1", "neither a valid IP address nor a DNS name"},
		{"10", "neither a valid IP address nor a DNS name"},
		{"[10.0.0.1]", "only an IPv6 address goes in brackets; give 10.0.0.1"},
		{"fe80::1%eth0", "an IP address with a zone"},
		{"gw.example.", "ends with a dot; give gw.example"},
		{"a..example", "empty label"},
		{"-gw.example", `label "-gw" starts or ends with a hyphen`},
		{"*", "a wildcard * must be the whole leftmost label"},
		{"a.*.example", "a wildcard * must be the whole leftmost label"},
		{"*gw.example", "a wildcard * must be the whole leftmost label"},
		{strings.Repeat("a", 64) + ".example", "has more than 63 characters"},
		{strings.Repeat("a.", 127) + "example", "more than the 253 of a DNS name"},
	}
	for _, tt := range invalid {
		got, err := tlsutil.ParseHost(tt.name)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseHost(%q) = %q, %v; want an error containing %q", tt.name, got, err, tt.want)
		}
	}
}

// TestParseHostsNamesEveryEntry checks that the error of ParseHosts names
// each invalid entry on a line of its own.
func TestParseHostsNamesEveryEntry(t *testing.T) {
	hosts, err := tlsutil.ParseHosts([]string{"gw.example", "a b", "[::1]", "x:1"})
	if err == nil {
		t.Fatalf("ParseHosts = %q, nil; want an error", hosts)
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], `"a b": `) || !strings.HasPrefix(lines[1], `"x:1": `) {
		t.Errorf("ParseHosts error = %q, want one line for each of \"a b\" and \"x:1\"", err)
	}
}
