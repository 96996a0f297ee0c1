package gcfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	cases := []struct {
		name              string
		floor, live, root uint64
		base, want        int
	}{
		{"before the first collection", 32 * mib, 0, 0, 100, 100},
		{"live heap over the floor", 32 * mib, 40 * mib, mib, 100, 100},
		{"live heap at the floor", 32 * mib, 32 * mib, 0, 100, 100},
		{"small live heap", 32 * mib, 4 * mib, 4 * mib, 100, 350},
		{"live heap near the floor", 32 * mib, 12 * mib, 4 * mib, 100, 125},
		{"goal under a raised GOGC", 32 * mib, 12 * mib, 4 * mib, 200, 200},
		{"tiny live heap, held by the minimum heap", 32 * mib, 100 << 10, 50 << 10, 100, 800},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Percent(c.floor, c.live, c.root, c.base); got != c.want {
				t.Errorf("Percent(%d, %d, %d, %d) = %d, want %d", c.floor, c.live, c.root, c.base, got, c.want)
			}
		})
	}
}

// heapGoal returns the heap size at which the next collection starts.
func heapGoal() uint64 {
	sample := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}}
	metrics.Read(sample)
	return sample[0].Value.Uint64()
}

// TestFloorHoldsGoal checks, with the runtime's own heap goal, that the
// floor holds after collections and that Stop gives GOGC back.
func TestFloorHoldsGoal(t *testing.T) {
	const floor = 64 << 20
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	runtime.GC()
	if goal := heapGoal(); goal >= floor/2 {
		t.Skipf("the test's heap goal is %d bytes already, too close to the floor to tell", goal)
	}

	tuned := make(chan int, 100)
	f := start(floor, func(percent int) {
		select {
		case tuned <- percent:
		default:
		}
	})
	if f == nil {
		t.Fatal("Start returned nil with GOGC=100")
	}
	defer f.Stop()
	if other := Start(floor); other != nil {
		other.Stop()
		t.Fatal("a second Start ran alongside the first")
	}
	for cycle := 0; cycle < 3; cycle++ {
		runtime.GC()
		select {
		case percent := <-tuned:
			if percent <= 100 {
				t.Errorf("after collection %d, GOGC=%d, want it raised over 100 for a small heap", cycle+1, percent)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no adjustment within 10 s of collection %d", cycle+1)
		}
		if goal := heapGoal(); goal < floor*9/10 || goal > floor*11/10 {
			t.Errorf("after collection %d, the heap goal is %d bytes, want about %d", cycle+1, goal, floor)
		}
	}

	f.Stop()
	f.Stop() // a second Stop changes nothing
	if percent := debug.SetGCPercent(100); percent != 100 {
		t.Errorf("after Stop, GOGC=%d, want 100 back", percent)
	}
	if goal := heapGoal(); goal >= floor/2 {
		t.Errorf("after Stop, the heap goal is still %d bytes", goal)
	}
	if again := Start(floor); again == nil {
		t.Error("Start after Stop returned nil")
	} else {
		again.Stop()
	}
}

func TestCollectorOff(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	if f := Start(64 << 20); f != nil {
		f.Stop()
		t.Fatal("Start returned a Floor with GOGC=off")
	}
	if percent := debug.SetGCPercent(-1); percent != -1 {
		t.Errorf("GOGC=%d after Start with GOGC=off, want it left off", percent)
	}
}

func TestZeroFloor(t *testing.T) {
	if f := Start(0); f != nil {
		f.Stop()
		t.Fatal("Start(0) returned a Floor")
	}
}
