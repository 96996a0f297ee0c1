package gateway

import (
	"sync"
	"time"
)

// warningLimiter lets a warning with a given key through at most once per
// interval, so that a plugin that stays down, or a client that keeps
// retrying a bad handshake, does not flood the log.
type warningLimiter struct {
	interval time.Duration

	mu   sync.Mutex
	last map[string]time.Time // mu guards
}

func newWarningLimiter(interval time.Duration) *warningLimiter {
	return &warningLimiter{interval: interval, last: map[string]time.Time{}}
}

// allow reports whether a warning with key may be logged now.
func (l *warningLimiter) allow(key string) bool {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if last, ok := l.last[key]; ok && now.Sub(last) < l.interval {
		return false
	}
	// Forget old keys so that keys made from peer addresses cannot grow
	// the map without bound.
	if len(l.last) > 10000 {
		clear(l.last)
	}
	l.last[key] = now
	return true
}
