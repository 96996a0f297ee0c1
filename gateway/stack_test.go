package gateway

import (
	"math"
	"runtime"
	"sync"
	"testing"
)

// TestGrowStack checks that growStack still grows the stack: a compiler
// that dropped its frame would silently bring back the copying it saves.
// Goroutines parked after calling it must hold far more stack memory than
// goroutines parked without.
func TestGrowStack(t *testing.T) {
	const goroutines = 200
	stackPerGoroutine := func(grow bool) uint64 {
		var ready, release sync.WaitGroup
		ready.Add(goroutines)
		release.Add(1)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range goroutines {
			go func() {
				if grow {
					growStack(nil)
				}
				ready.Done()
				release.Wait()
			}()
		}
		ready.Wait()
		runtime.ReadMemStats(&after)
		release.Done()
		return (after.StackInuse - min(before.StackInuse, after.StackInuse)) / goroutines
	}
	// Goroutines of tests running alongside add to the process's stack
	// in use, never take from it, so the least of three counts is the
	// closest to the truth.
	plain, grown := uint64(math.MaxUint64), uint64(math.MaxUint64)
	for range 3 {
		plain, grown = min(plain, stackPerGoroutine(false)), min(grown, stackPerGoroutine(true))
	}
	t.Logf("stack per goroutine: %d bytes without growStack, %d with", plain, grown)
	if grown < 12<<10 || grown < 2*plain {
		t.Errorf("growStack left %d bytes of stack per goroutine (%d without): its frame no longer grows the stack", grown, plain)
	}
}
