package routing_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/routing"
)

// newTestTable returns a table of three engines without pools: SSEPython
// with host py.example, R with hosts r.example and R2.Example, and Julia
// with no hosts.
func newTestTable(t *testing.T) *routing.Table {
	t.Helper()
	return routing.NewTable([]*routing.Engine{
		{Name: "SSEPython", Config: &config.Engine{Hosts: []string{"py.example"}}},
		{Name: "R", Config: &config.Engine{Hosts: []string{"r.example", "R2.Example."}}},
		{Name: "Julia", Config: &config.Engine{}},
	})
}

// TestTableMatch checks the order in which a call selects its engine: the
// x-sse-engine header, then the :authority host, then the TLS server
// name, then the listener's default engine.
func TestTableMatch(t *testing.T) {
	tests := []struct {
		name string
		req  routing.Request
		want string
	}{
		{
			name: "header beats everything",
			req:  routing.Request{EngineHeader: "Julia", Authority: "py.example:50051", ServerName: "r.example", DefaultEngine: "R"},
			want: "Julia",
		},
		{
			name: "header ignores case",
			req:  routing.Request{EngineHeader: "ssepython"},
			want: "SSEPython",
		},
		{
			name: "authority beats server name",
			req:  routing.Request{Authority: "py.example:50051", ServerName: "r.example", DefaultEngine: "Julia"},
			want: "SSEPython",
		},
		{
			name: "authority without port",
			req:  routing.Request{Authority: "r.example", DefaultEngine: "Julia"},
			want: "R",
		},
		{
			name: "authority in other case",
			req:  routing.Request{Authority: "PY.Example:443"},
			want: "SSEPython",
		},
		{
			name: "authority with trailing dot",
			req:  routing.Request{Authority: "py.example.:50051"},
			want: "SSEPython",
		},
		{
			name: "host configured with case and trailing dot",
			req:  routing.Request{Authority: "r2.example:50051"},
			want: "R",
		},
		{
			name: "unknown authority falls back to server name",
			req:  routing.Request{Authority: "127.0.0.1:50051", ServerName: "r.example", DefaultEngine: "Julia"},
			want: "R",
		},
		{
			name: "server name beats default",
			req:  routing.Request{ServerName: "Py.Example.", DefaultEngine: "Julia"},
			want: "SSEPython",
		},
		{
			name: "default when nothing else matches",
			req:  routing.Request{Authority: "127.0.0.1:50051", ServerName: "localhost", DefaultEngine: "Julia"},
			want: "Julia",
		},
		{
			name: "default ignores case",
			req:  routing.Request{Authority: "[::1]:50051", DefaultEngine: "julia"},
			want: "Julia",
		},
	}
	table := newTestTable(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := table.Match(tt.req)
			if err != nil {
				t.Fatalf("Match(%+v) error: %v", tt.req, err)
			}
			if got.Name != tt.want {
				t.Errorf("Match(%+v) = %s, want %s", tt.req, got.Name, tt.want)
			}
		})
	}
}

// TestTableMatchErrors checks that a call selecting no engine fails with
// the right sentinel and a message naming the value and every engine.
func TestTableMatchErrors(t *testing.T) {
	tests := []struct {
		name     string
		req      routing.Request
		wantErr  error
		wantText []string
	}{
		{
			name:     "unknown header",
			req:      routing.Request{EngineHeader: "Octave", Authority: "py.example", DefaultEngine: "R"},
			wantErr:  routing.ErrUnknownEngine,
			wantText: []string{`"Octave"`, routing.EngineHeader, "configured engines: Julia, R, SSEPython"},
		},
		{
			name:     "no host and no default",
			req:      routing.Request{Authority: "Gw.Example:50051", ServerName: "gw.example"},
			wantErr:  routing.ErrNoEngine,
			wantText: []string{`host "gw.example"`, "configured engines: Julia, R, SSEPython"},
		},
		{
			name:     "nothing at all",
			req:      routing.Request{},
			wantErr:  routing.ErrNoEngine,
			wantText: []string{"configured engines: Julia, R, SSEPython"},
		},
	}
	table := newTestTable(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := table.Match(tt.req)
			if got != nil {
				t.Errorf("Match(%+v) = %s, want no engine", tt.req, got.Name)
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Match(%+v) error = %v, want %v", tt.req, err, tt.wantErr)
			}
			for _, text := range tt.wantText {
				if !strings.Contains(err.Error(), text) {
					t.Errorf("Match(%+v) error = %q, want it to contain %q", tt.req, err, text)
				}
			}
		})
	}
}

// TestTableEngines checks that Engines returns every engine once.
func TestTableEngines(t *testing.T) {
	var names []string
	for _, engine := range newTestTable(t).Engines() {
		names = append(names, engine.Name)
	}
	slices.Sort(names)
	if want := []string{"Julia", "R", "SSEPython"}; !slices.Equal(names, want) {
		t.Errorf("Engines() names = %q, want %q", names, want)
	}
}
