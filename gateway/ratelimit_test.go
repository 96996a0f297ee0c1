package gateway

import (
	"fmt"
	"testing"
	"time"
)

// TestWarningLimiterFull checks that a limiter holding maxWarningKeys
// recent keys lets no new key through and keeps limiting the keys it has.
// It once forgot every key instead, so a client that sent many distinct
// header keys re-enabled every other warning.
func TestWarningLimiterFull(t *testing.T) {
	l := newWarningLimiter(time.Hour)
	if !l.allow("telemetry") {
		t.Fatal("first warning of a key not let through")
	}
	for i := range maxWarningKeys {
		l.allow(fmt.Sprintf("unsent:R:request header:x-%d", i))
	}
	if l.allow("telemetry") {
		t.Error("a key seen within the interval let through again once the limiter filled up")
	}
	if l.allow("unsent:R:request header:x-new") {
		t.Error("a new key let through with the limiter full of recent keys")
	}

	// Keys whose interval has passed make room.
	l.interval = 0
	l.lastSweep = time.Time{}
	if !l.allow("handshake:10.0.0.1:expired") {
		t.Error("a new key not let through once the others' interval passed")
	}
}
