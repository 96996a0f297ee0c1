// Package gcfloor keeps the Go garbage collector from running while the
// heap is small.
//
// Go collects once the heap has grown by GOGC percent (100 by default)
// over what the last collection kept. A gateway keeps little live, a few
// megabytes, while every call allocates a few kilobytes and drops them
// when it ends. Under many small calls the collector then runs dozens of
// times a second: in CPU profiles of the gateway, its workers took about
// a tenth of the time. A floor under the heap goal lets garbage pile up to
// a fixed size before a collection, which costs that much memory and
// saves most of those collections. Once the live heap is large enough to
// put the goal above the floor, GOGC applies as usual.
package gcfloor

import (
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// The runtime metrics from which Go computes the heap goal: the heap that
// the last collection marked live, and the goroutine stacks and globals it
// scanned. Go sets the goal at live + (live + stacks + globals) * GOGC/100.
var goalInputs = []string{"/gc/heap/live:bytes", "/gc/scan/stack:bytes", "/gc/scan/globals:bytes"}

// minimumHeap is Go's minimum heap goal at GOGC=100 (runtime/mgcpacer.go).
const minimumHeap = 4 << 20

// Floor raises GOGC after each collection so that the next one starts no
// sooner than when the heap reaches floor bytes, and never lowers it below
// percent, the value it starts from.
type Floor struct {
	floor   uint64
	percent int

	mu      sync.Mutex
	stopped bool
	sample  []metrics.Sample
	// tuned, when set, is called after each adjustment that follows a
	// collection, once the next one is awaited. Tests wait on it.
	tuned func(percent int)
}

// active is set while a Floor runs: GOGC belongs to the whole process, so
// only one may.
var active atomic.Bool

// Start begins keeping the heap goal at or above floor bytes, from GOGC's
// current value (its environment variable, or 100). It returns nil, and
// does nothing, when floor is 0, when GOGC turns the collector off, or
// when another Floor runs.
func Start(floor uint64) *Floor {
	return start(floor, nil)
}

func start(floor uint64, tuned func(int)) *Floor {
	if floor == 0 || !active.CompareAndSwap(false, true) {
		return nil
	}
	percent := debug.SetGCPercent(100)
	debug.SetGCPercent(percent)
	if percent < 0 {
		active.Store(false)
		return nil
	}
	f := &Floor{
		floor: floor, percent: percent, tuned: tuned,
		sample: make([]metrics.Sample, len(goalInputs)),
	}
	for i, name := range goalInputs {
		f.sample[i].Name = name
	}
	f.tune()
	f.arm()
	return f
}

// Stop gives GOGC back its starting value and ends the adjustments.
func (f *Floor) Stop() {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return
	}
	f.stopped = true
	debug.SetGCPercent(f.percent)
	active.Store(false)
}

// arm registers a cleanup on a new, unreachable object: it runs after the
// next collection, which is the moment the live heap is known again.
func (f *Floor) arm() {
	// The object holds a pointer so that Go's tiny allocator, which packs
	// small pointer-free objects into shared blocks, leaves it alone: its
	// cleanup would otherwise wait for its neighbours too.
	sentinel := &struct{ _ *byte }{}
	runtime.AddCleanup(sentinel, func(f *Floor) {
		percent, ok := f.tune()
		if !ok {
			return
		}
		f.arm()
		if f.tuned != nil {
			f.tuned(percent)
		}
	}, f)
}

// tune sets GOGC for the next collection and returns it, or false once
// the floor is stopped.
func (f *Floor) tune() (int, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return 0, false
	}
	metrics.Read(f.sample)
	live := f.sample[0].Value.Uint64()
	roots := f.sample[1].Value.Uint64() + f.sample[2].Value.Uint64()
	percent := Percent(f.floor, live, roots, f.percent)
	debug.SetGCPercent(percent)
	return percent, true
}

// Percent returns the GOGC value that puts the heap goal at floor bytes
// after a collection that kept live bytes of heap and scanned roots bytes
// of stacks and globals, and at least base.
func Percent(floor, live, roots uint64, base int) int {
	if live == 0 || live >= floor {
		return base
	}
	p := (floor - live) * 100 / (live + roots)
	// Go never sets the goal below a minimum heap of 4 MiB * GOGC/100, so
	// a GOGC high enough for a tiny live heap would lift that minimum far
	// above the floor.
	p = min(p, floor*100/minimumHeap)
	return max(int(min(p, math.MaxInt32)), base)
}
