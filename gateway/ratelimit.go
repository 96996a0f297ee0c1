package gateway

import (
	"maps"
	"sync"
	"time"
)

// warningLimiter lets a warning with a given key through at most once per
// interval, so that a plugin that stays down, or a client that keeps
// retrying a bad handshake, does not flood the log.
type warningLimiter struct {
	interval time.Duration

	mu        sync.Mutex // guards the following
	last      map[string]time.Time
	lastSweep time.Time
}

// maxWarningKeys bounds the keys a limiter remembers. Keys are made from
// peer addresses, and for Gateway.unsentWarnings from header keys that
// clients choose, so a client could otherwise grow the map without bound.
const maxWarningKeys = 10000

func newWarningLimiter(interval time.Duration) *warningLimiter {
	return &warningLimiter{interval: interval, last: map[string]time.Time{}}
}

// allow reports whether a warning with key may be logged now. With
// maxWarningKeys keys seen within the interval, a new key is not let
// through: forgetting them all instead would let a client that makes new
// keys quickly re-enable every other warning, and flood the log with them.
func (l *warningLimiter) allow(key string) bool {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	last, ok := l.last[key]
	if ok && now.Sub(last) < l.interval {
		return false
	}
	if !ok && len(l.last) >= maxWarningKeys {
		// A sweep at most once a second, since each costs a pass over
		// every key.
		if now.Sub(l.lastSweep) >= time.Second {
			l.lastSweep = now
			maps.DeleteFunc(l.last, func(_ string, at time.Time) bool { return now.Sub(at) >= l.interval })
		}
		if len(l.last) >= maxWarningKeys {
			return false
		}
	}
	l.last[key] = now
	return true
}
