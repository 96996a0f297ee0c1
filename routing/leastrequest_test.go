package routing_test

import (
	"context"
	"testing"
	"time"

	"github.com/ssegw/ssegw/config"
)

// TestLeastRequestAvoidsBusyReplica holds one call on replica a, then
// makes calls one after the other: b responds to each at once, so it has no
// call open when the next one starts, and every one of them must go to b.
// round_robin would send every other one to a.
func TestLeastRequestAvoidsBusyReplica(t *testing.T) {
	t.Parallel()
	a := startCappedPlugin(t, time.Hour) // holds each call until it is cancelled
	b := startCappedPlugin(t, 0)
	close(b.release) // b responds at once
	client := newBalancedCappedEngine(t, config.BalancerLeastRequest, 0, nil, a, b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// call starts one call and waits until it reaches a, where it stays
	// until cancelled, or until b has served it.
	call := func() (reachedA bool, cancelHeld func()) {
		callCtx, cancelCall := context.WithCancel(ctx)
		result := make(chan error, 1)
		go func() { result <- cappedCall(callCtx, client) }()
		select {
		case <-a.arrived:
			return true, func() { cancelCall(); <-result }
		case err := <-result:
			cancelCall()
			if err != nil {
				t.Fatalf("call = %v, want OK", err)
			}
			return false, nil
		case <-ctx.Done():
			t.Fatal("a call neither reached a nor ended")
			return false, nil
		}
	}

	// A replica that is still connecting takes no calls, so the check
	// means something only once each has taken one.
	for seenA, seenB := false, false; !seenA || !seenB; {
		reachedA, cancelCall := call()
		if reachedA {
			seenA = true
			cancelCall()
		} else {
			seenB = true
		}
	}
	// With no call open, either replica may take the next: call until
	// a holds one.
	var cancelHeld func()
	for {
		reachedA, cancelCall := call()
		if reachedA {
			cancelHeld = cancelCall
			break
		}
	}
	defer cancelHeld()
	const calls = 30
	for i := range calls {
		if reachedA, cancelCall := call(); reachedA {
			cancelCall()
			t.Fatalf("call %d of %d went to the replica with a call open", i+1, calls)
		}
	}
}
