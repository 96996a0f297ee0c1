package routing

import (
	"context"
	"net"
	"slices"
	"time"
)

// dnsLookupTimeout bounds one resolution of a DNS backend.
const dnsLookupTimeout = 5 * time.Second

// maxDiscoveredReplicas bounds the replicas of one dns: true backend. Each
// replica costs two connections and a probe every probe_interval, so a
// name that resolves to thousands of addresses, by mistake or through a
// wildcard record, would otherwise open thousands of connections. The
// lowest addresses in sorted order are kept, so that the same DNS response
// keeps the same replicas.
const maxDiscoveredReplicas = 64

// discoverLoop resolves the host of a backend with dns: true now and every
// dns_interval, and makes each address a replica: new addresses get a
// replica and probes, vanished ones are dropped and their calls in flight
// finish. A failed lookup keeps the replicas as they are.
func (e *Engine) discoverLoop(ctx context.Context, backend int) {
	address := e.Config.Backends[backend].Address
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		e.logger.Error("backend address cannot be resolved", "engine", e.Name, "backend", e.Config.Backends[backend].Address, "error", err.Error())
		return
	}
	failing := false
	leftOut := 0
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		lookupCtx, cancel := context.WithTimeout(ctx, dnsLookupTimeout)
		addresses, err := ResolveBackend(lookupCtx, address)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			if !failing {
				e.logger.Warn("resolving a DNS backend failed; its replicas stay as they are", "engine", e.Name, "host", host, "error", err.Error())
			}
			failing = true
		default:
			failing = false
			kept := BoundReplicas(addresses)
			if dropped := len(addresses) - len(kept); dropped != leftOut {
				leftOut = dropped
				if dropped > 0 {
					e.logger.Warn("a DNS backend resolves to more addresses than the gateway makes replicas of; the rest are left out", "engine", e.Name, "host", host, "addresses", len(addresses), "replicas", len(kept))
				}
			}
			e.setDiscovered(ctx, backend, kept)
		}
		timer.Reset(e.Config.DNSInterval)
	}
}

// ResolveBackend returns the address of each replica of a dns: true
// backend at address: host:port for every address its host resolves to.
func ResolveBackend(ctx context.Context, address string) ([]string, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	ips, err := net.DefaultResolver.LookupHost(ctx, host)
	if err != nil {
		return nil, err
	}
	addresses := make([]string, len(ips))
	for i, ip := range ips {
		addresses[i] = net.JoinHostPort(ip, port)
	}
	return addresses, nil
}

// BoundReplicas returns the addresses of a DNS answer that the gateway
// makes replicas of: sorted, without repeats, and at most
// maxDiscoveredReplicas of them.
func BoundReplicas(addresses []string) []string {
	addresses = slices.Compact(slices.Sorted(slices.Values(addresses)))
	return addresses[:min(len(addresses), maxDiscoveredReplicas)]
}

// setDiscovered makes addresses the replicas of a DNS backend.
func (e *Engine) setDiscovered(ctx context.Context, backend int, addresses []string) {
	slices.Sort(addresses)
	e.mu.Lock()
	current := e.Replicas()
	var next, added, removed []*Replica
	for _, replica := range current {
		if replica.backend == backend && !slices.Contains(addresses, replica.Address) {
			removed = append(removed, replica)
			continue
		}
		next = append(next, replica)
	}
	for _, address := range addresses {
		if slices.ContainsFunc(current, func(r *Replica) bool { return r.backend == backend && r.Address == address }) {
			continue
		}
		replica, err := e.newReplica(backend, address)
		if err != nil {
			e.logger.Error("adding a discovered replica failed", "engine", e.Name, "backend", address, "error", err.Error())
			continue
		}
		added = append(added, replica)
		next = append(next, replica)
	}
	e.replicas.Store(&next)
	e.mu.Unlock()

	// Probe the new replicas; stop and close the vanished ones. The
	// reconcile after the first probe of a new replica adds it to the
	// pool; the one here takes vanished ones out at once.
	for _, replica := range added {
		e.logger.Info("replica discovered", "engine", e.Name, "backend", replica.Address)
		e.startProbes(ctx, replica)
	}
	for _, replica := range removed {
		e.logger.Info("replica gone from DNS", "engine", e.Name, "backend", replica.Address)
		replica.mu.Lock()
		stop := replica.stop
		replica.mu.Unlock()
		if stop != nil {
			stop()
		}
	}
	if len(removed) > 0 {
		e.reconcile()
		for _, replica := range removed {
			replica.conn.Close()
		}
	}
}
