package routing_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/routing"
)

// fuzzEngines are the engines of the table that FuzzMatch matches against:
// with hosts, with a host in other case and with a trailing dot, and
// without hosts.
var fuzzEngines = []*routing.Engine{
	{Name: "SSEPython", Config: &config.Engine{Hosts: []string{"py.gw.test", "Python.GW.Test."}}},
	{Name: "R", Config: &config.Engine{Hosts: []string{"r.gw.test", "127.0.0.1"}}},
	{Name: "Julia_2", Config: &config.Engine{}},
}

// FuzzMatch feeds arbitrary requests to Table.Match, which must never
// panic. It returns one of the table's engines, the one that the
// x-sse-engine header names when the header is set. Otherwise its error
// wraps ErrUnknownEngine, for a header that names no engine, or
// ErrNoEngine.
func FuzzMatch(f *testing.F) {
	f.Add("", "py.gw.test:50051", "", "")
	f.Add("r", "PY.GW.TEST.", "r.gw.test", "Julia_2")
	f.Add("", "[::1]:443", "python.gw.test", "")
	f.Add("", "127.0.0.1", "", "nobody")
	f.Add("Nobody", "", "", "R")
	f.Add("", ":", ".", "")
	f.Add("\xff", "\x00:\xff", "K", "julia_2")
	table := routing.NewTable(fuzzEngines)
	f.Fuzz(func(t *testing.T, engineHeader, authority, serverName, defaultEngine string) {
		req := routing.Request{EngineHeader: engineHeader, Authority: authority, ServerName: serverName, DefaultEngine: defaultEngine}
		engine, err := table.Match(req)

		if err != nil {
			if engine != nil {
				t.Fatalf("Match(%+v) = %s and error %v, want one of them", req, engine.Name, err)
			}
			unknown, none := errors.Is(err, routing.ErrUnknownEngine), errors.Is(err, routing.ErrNoEngine)
			if !unknown && !none {
				t.Fatalf("Match(%+v) error = %v, want it to wrap ErrUnknownEngine or ErrNoEngine", req, err)
			}
			if unknown != (engineHeader != "") {
				t.Fatalf("Match(%+v) error = %v; ErrUnknownEngine is for an unknown %s header only", req, err, routing.EngineHeader)
			}
			if !strings.Contains(err.Error(), "configured engines: Julia_2, R, SSEPython") {
				t.Fatalf("Match(%+v) error = %q, want it to list the configured engines", req, err)
			}
			return
		}
		if !slices.Contains(fuzzEngines, engine) {
			t.Fatalf("Match(%+v) = %v, want one of the table's engines", req, engine)
		}
		if engineHeader != "" && strings.ToLower(engine.Name) != strings.ToLower(engineHeader) {
			t.Fatalf("Match(%+v) = %s, want the engine that the %s header names", req, engine.Name, routing.EngineHeader)
		}
	})
}
