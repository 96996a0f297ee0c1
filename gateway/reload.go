package gateway

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"google.golang.org/grpc"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/routing"
)

// Reload applies a new, validated configuration without closing any
// client connection. Engines that are new or changed get new pools and
// probes and take the next calls; engines unchanged keep theirs, with
// their capabilities; engines replaced or removed finish their calls in
// flight, up to drain_timeout, before they close. A changed engine with the
// same backends starts with the capabilities of the engine it replaces.
// Listeners' default
// engines follow the new file.
//
// Listener addresses and TLS, limits, keepalive, telemetry, redaction,
// the admin listener, the log and state_dir take effect only at the next
// start. A difference from the start's configuration in them is reported
// in the returned warnings, at every reload until then.
func (g *Gateway) Reload(cfg *config.Config) (warnings []string, err error) {
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	if g.stopping.Load() {
		return nil, errors.New("the gateway is stopping")
	}
	warnings = restartOnlyChanges(g.cfg, cfg)

	// Certificates: listeners and unchanged engines read their files
	// again; new engines read them as they start.
	g.certificates.Reload()

	// Build the engines that are new or changed; keep the others.
	oldTable := g.routes()
	var engines, replaced []*routing.Engine
	var started []*routing.Engine
	for _, name := range cfg.EngineNames() {
		engineConfig := cfg.Engine(name)
		previous := oldTable.Engine(name)
		if previous != nil && sameEngine(previous.Config, engineConfig) {
			engines = append(engines, previous)
			continue
		}
		// The old engine's calls in flight, and without a state_dir its
		// capabilities, are known only to it.
		engine, err := g.newEngine(engineConfig, g.cfg.StateDir, previous) // state_dir fixed at start, as for the engines kept
		if err != nil {
			for _, engine := range started {
				engine.Close()
			}
			return warnings, err
		}
		engines = append(engines, engine)
		started = append(started, engine)
	}
	kept := map[*routing.Engine]bool{}
	for _, engine := range engines {
		kept[engine] = true
	}
	for _, engine := range oldTable.Engines() {
		if !kept[engine] {
			replaced = append(replaced, engine)
		}
	}

	// Switch: new calls see the new table from here on.
	for _, engine := range started {
		engine.Start()
	}
	defaults := slices.Clone(g.routing.Load().defaults)
	for i, l := range g.listeners {
		if j, ok := reloadedListener(cfg.Listeners, i, l.config.Address); ok {
			defaults[i] = cfg.Listeners[j].Engine
		}
	}
	g.routing.Store(&routes{table: routing.NewTable(engines), defaults: defaults})
	previous := g.current.Swap(cfg)
	g.warnMovedMembers(previous, cfg)

	// Let replaced engines finish their calls in the background.
	for _, engine := range replaced {
		g.retiring.Go(func() {
			drained := &drainedError{engine: engine.Name, removed: cfg.Engine(engine.Name) == nil, drainTimeout: cfg.DrainTimeout}
			ctx, cancel := context.WithTimeoutCause(g.retireCtx, cfg.DrainTimeout, drained)
			defer cancel()
			if cut := engine.Drain(ctx); cut > 0 && context.Cause(ctx) == drained {
				g.logger.Warn("drain_timeout passed before the calls of an engine that a reload replaced or removed had ended; they end with Unavailable",
					"engine", engine.Name, "calls", cut, "drain_timeout", cfg.DrainTimeout.String())
			}
			g.forgetRemovedEngine(engine.Name)
		})
	}
	g.logger.Info("configuration reloaded", "engines", len(engines), "new_or_changed", engineNames(started), "replaced_or_removed", engineNames(replaced))
	for _, engine := range started {
		g.logEngine(engine.Config)
	}
	g.warnUncoveredHosts()
	return warnings, nil
}

// forgetRemovedEngine drops the waiting gauge of an engine that no
// longer is in the configuration, once its calls have ended, so that the
// metrics stop listing the engine. Under reloadMu, because a reload that
// adds the engine again starts its gauge at 0.
func (g *Gateway) forgetRemovedEngine(name string) {
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	if g.current.Load().Engine(name) == nil {
		g.observer.metrics.waiting.forget(setKey{engine: name})
	}
}

// warnMovedMembers warns about each merged engine whose new merge list
// moved or removed members. A member's functions have ids by its position
// in the list, and a Qlik engine keeps the ids it learnt when it started:
// until it restarts, it calls other functions than its scripts name, or
// functions that are gone.
func (g *Gateway) warnMovedMembers(before, after *config.Config) {
	for _, name := range after.EngineNames() {
		was, now := before.Engine(name), after.Engine(name)
		if was == nil || len(was.Merge) == 0 {
			continue
		}
		var changes []string
		for i, member := range was.Merge {
			first, last := routing.MemberIDs(i)
			j := slices.IndexFunc(now.Merge, func(m string) bool { return strings.EqualFold(m, member) })
			switch {
			case j < 0:
				changes = append(changes, fmt.Sprintf("%s no longer merged (ids %d to %d)", member, first, last))
			case j != i:
				newFirst, newLast := routing.MemberIDs(j)
				changes = append(changes, fmt.Sprintf("%s moved from ids %d to %d to ids %d to %d", member, first, last, newFirst, newLast))
			}
		}
		if len(changes) > 0 {
			g.logger.Warn("merged engine's function ids changed; restart the Qlik engines that use it, since each calls functions by the ids it learnt when it started",
				"engine", name, "changes", changes)
		}
	}
}

// engineNames lists engines by name, for a log record.
func engineNames(engines []*routing.Engine) []string {
	names := make([]string, len(engines))
	for i, engine := range engines {
		names[i] = engine.Name
	}
	return names
}

// reloadedListener finds the index in listeners of the new section of
// the running listener i at address. Listeners are matched by position, as
// several may share an address such as 127.0.0.1:0; when the list changed
// shape or order, a listener keeps its engine unless exactly one section
// names its address.
func reloadedListener(listeners []config.Listener, i int, address string) (int, bool) {
	if i < len(listeners) && listeners[i].Address == address {
		return i, true
	}
	found := -1
	for j, l := range listeners {
		if l.Address == address {
			if found >= 0 {
				return 0, false
			}
			found = j
		}
	}
	return found, found >= 0
}

// newEngine builds an engine of cfg with the gateway's shared settings.
// newEngine makes the engine of cfg; replaces is the engine of the same
// name that a reload replaces with it, or nil.
func (g *Gateway) newEngine(cfg *config.Engine, stateDir string, replaces *routing.Engine) (*routing.Engine, error) {
	// The waiting gauge lists every engine, at 0 until a call waits, so
	// that an alert on it covers the engine before its first outage.
	g.observer.metrics.waitingChanged(cfg.Name, 0)
	return routing.NewEngine(cfg, routing.EngineOptions{
		PoolOptions: routing.PoolOptions{
			Limits:      g.cfg.Limits,
			Keepalive:   g.cfg.Keepalive,
			UserAgent:   g.userAgent,
			DialOptions: []grpc.DialOption{grpc.WithStatsHandler(backendEvents{})},
		},
		Logger:       g.logger,
		Cut:          g.cutCtx,
		StateDir:     stateDir,
		Certificates: g.certificates,
		Replaces:     replaces,
	})
}

// sameEngine reports whether two engine sections configure the same
// engine, so that a reload can keep its connections and capabilities.
func sameEngine(a, b *config.Engine) bool {
	return reflect.DeepEqual(a, b)
}

// restartOnlyChanges lists the changes from the start's configuration to
// cfg that a reload does not apply.
func restartOnlyChanges(start, cfg *config.Config) []string {
	var changes []string
	check := func(key string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			changes = append(changes, fmt.Sprintf("%s changed; it takes effect at the next start", key))
		}
	}
	// In any order: a restart opens the same listeners whatever their
	// order, and a reload finds each one's section by its address.
	addresses := func(c *config.Config) []string {
		var list []string
		for _, l := range c.Listeners {
			list = append(list, l.Address+fmt.Sprintf(" tls=%v insecure=%v", l.TLS != nil, l.Insecure))
		}
		slices.Sort(list)
		return list
	}
	check("listeners (addresses or security)", addresses(start), addresses(cfg))
	for i, l := range start.Listeners {
		// The files are reloaded; where they are is fixed at start.
		if j, ok := reloadedListener(cfg.Listeners, i, l.Address); ok {
			check(fmt.Sprintf("listeners[%d].tls", j), l.TLS, cfg.Listeners[j].TLS)
		}
	}
	check("limits", start.Limits, cfg.Limits)
	check("keepalive", start.Keepalive, cfg.Keepalive)
	check("telemetry", start.Telemetry, cfg.Telemetry)
	check("redaction", start.Redaction, cfg.Redaction)
	check("admin", start.Admin, cfg.Admin)
	check("log", start.Log, cfg.Log)
	check("state_dir", start.StateDir, cfg.StateDir)
	return changes
}
