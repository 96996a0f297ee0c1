// Package routing decides which engine a call belongs to and holds each
// engine's pool of plugin replicas.
package routing

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/ssegw/ssegw/config"
)

// EngineHeader is the request header that names the engine explicitly. It
// is meant for tools and tests; Qlik does not send it. The gateway removes
// it before forwarding a call.
const EngineHeader = "x-sse-engine"

var (
	// ErrUnknownEngine means that the x-sse-engine header names an engine
	// that is not configured.
	ErrUnknownEngine = errors.New("unknown engine")

	// ErrNoEngine means that nothing about the call selects an engine.
	ErrNoEngine = errors.New("no engine for this call")
)

// Table matches calls to engines. It is immutable, so it can be read from
// any goroutine; a configuration change builds a new one.
type Table struct {
	byName map[string]*Engine // keyed by lower-case name
	byHost map[string]*Engine // keyed by config.NormalizeHost
	names  string             // for error messages: "Py, R"
}

// NewTable indexes engines by name and host. The configuration must have
// been validated, so that no host belongs to two engines.
func NewTable(engines []*Engine) *Table {
	t := &Table{byName: map[string]*Engine{}, byHost: map[string]*Engine{}}
	names := make([]string, 0, len(engines))
	for _, engine := range engines {
		t.byName[strings.ToLower(engine.Name)] = engine
		for _, host := range engine.Config.Hosts {
			t.byHost[config.NormalizeHost(host)] = engine
		}
		names = append(names, engine.Name)
	}
	t.names = strings.Join(slices.Sorted(slices.Values(names)), ", ")

	// Point merged engines at their members in this table.
	for _, engine := range engines {
		if !engine.Merged() {
			continue
		}
		var members []*Engine
		for _, name := range engine.Config.Merge {
			if member, ok := t.byName[strings.ToLower(name)]; ok {
				members = append(members, member)
			}
		}
		engine.members.Store(&members)
	}
	return t
}

// Engines returns every engine of the table.
func (t *Table) Engines() []*Engine {
	engines := make([]*Engine, 0, len(t.byName))
	for _, engine := range t.byName {
		engines = append(engines, engine)
	}
	return engines
}

// Engine returns the engine with the given name, ignoring case, or nil.
func (t *Table) Engine(name string) *Engine {
	return t.byName[strings.ToLower(name)]
}

// Request is what the table looks at to match a call.
type Request struct {
	// EngineHeader is the value of the x-sse-engine header, if any.
	EngineHeader string
	// Authority is the call's :authority, host with or without port.
	Authority string
	// ServerName is the name the client sent in its TLS handshake (SNI).
	ServerName string
	// DefaultEngine is the engine of the listener the call arrived on.
	DefaultEngine string
}

// Match returns the engine for a call. It tries, in order, the
// x-sse-engine header, the :authority host, the TLS server name and the
// listener's default engine. Errors wrap ErrUnknownEngine or ErrNoEngine
// and list the configured engines.
func (t *Table) Match(req Request) (*Engine, error) {
	if req.EngineHeader != "" {
		if engine, ok := t.byName[strings.ToLower(req.EngineHeader)]; ok {
			return engine, nil
		}
		return nil, fmt.Errorf("%w %q in the %s header; configured engines: %s", ErrUnknownEngine, req.EngineHeader, EngineHeader, t.names)
	}
	host := authorityHost(req.Authority)
	if engine, ok := t.byHost[host]; ok {
		return engine, nil
	}
	if engine, ok := t.byHost[config.NormalizeHost(req.ServerName)]; ok {
		return engine, nil
	}
	if req.DefaultEngine != "" {
		if engine, ok := t.byName[strings.ToLower(req.DefaultEngine)]; ok {
			return engine, nil
		}
	}
	return nil, fmt.Errorf("%w: host %q selects no engine and this listener has no default engine; configured engines: %s", ErrNoEngine, host, t.names)
}

// authorityHost returns the normalized host of an :authority value.
func authorityHost(authority string) string {
	if host, _, err := net.SplitHostPort(authority); err == nil {
		return config.NormalizeHost(host)
	}
	return config.NormalizeHost(authority)
}
