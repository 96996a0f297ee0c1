package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
)

// rssInterval is how often the target's resident memory is sampled
// during a run.
const rssInterval = 50 * time.Millisecond

// runSpec is one measurement: concurrency callers that repeat call
// against one connection for duration.
type runSpec struct {
	call        *callSpec
	concurrency int
	duration    time.Duration
	callTimeout time.Duration
	// pid is the process whose resident memory, with its descendants', is
	// sampled; 0 samples none.
	pid int
}

// runResult is the measurement of one run. Only what happened inside the
// run's window counts towards rates: calls that ended within it, and
// response rows that arrived within it. Calls still open when the window
// closes may finish, so that a stall is seen, and their latency counts.
type runResult struct {
	concurrency int
	window      time.Duration

	// started counts every call begun; completed those that ended well
	// within the window.
	started   int
	completed int
	// stalls counts calls that reached callTimeout after no response
	// message for stallSilence; slowCalls those that reached it while
	// responses still came. failures counts the calls that failed
	// otherwise, the first of which is firstError.
	stalls      int
	slowCalls   int
	failures    int
	firstError  error
	callTimeout time.Duration

	// latencies of every call that ended well, sorted.
	latencies []time.Duration
	// rows and bytes of response messages that arrived within the window.
	rows  int64
	bytes int64

	// peakRSS is the largest resident memory sampled, in bytes; 0 when
	// none was sampled.
	peakRSS int64
	// cpu is the CPU time the target's processes used during the run,
	// from the first call to the end of the last; 0 when not measured.
	cpu time.Duration
}

// callsPerSecond returns the rate of calls completed within the window.
func (r runResult) callsPerSecond() float64 {
	return float64(r.completed) / r.window.Seconds()
}

// rowsPerSecond returns the rate of response rows received within the
// window.
func (r runResult) rowsPerSecond() float64 {
	return float64(r.rows) / r.window.Seconds()
}

// megabytesPerSecond returns the rate of response bytes received within
// the window, in millions of bytes per second.
func (r runResult) megabytesPerSecond() float64 {
	return float64(r.bytes) / 1e6 / r.window.Seconds()
}

// latency returns the p-th percentile of the durations of the calls that
// ended well, in milliseconds, or NaN when none did.
func (r runResult) latency(p float64) float64 {
	if len(r.latencies) == 0 {
		return math.NaN()
	}
	return float64(percentile(r.latencies, p)) / float64(time.Millisecond)
}

// cpuPerCall returns the target's CPU time per call begun, in
// microseconds, or NaN when it was not measured.
func (r runResult) cpuPerCall() float64 {
	if r.cpu == 0 || r.started == 0 {
		return math.NaN()
	}
	return float64(r.cpu) / float64(time.Microsecond) / float64(r.started)
}

// rssMiB returns the peak resident memory in MiB, or NaN when it was not
// sampled.
func (r runResult) rssMiB() float64 {
	if r.peakRSS == 0 {
		return math.NaN()
	}
	return float64(r.peakRSS) / (1 << 20)
}

// problem describes why the run does not count, or returns "" when it
// does.
func (r runResult) problem() string {
	switch {
	case r.stalls > 0:
		return fmt.Sprintf("stalled: %d of %d calls hit the %v deadline, after no response message for at least %v",
			r.stalls, r.started, r.callTimeout, stallSilence(r.callTimeout))
	case r.slowCalls > 0:
		return fmt.Sprintf("too slow: %d of %d calls were still receiving responses at the %v deadline",
			r.slowCalls, r.started, r.callTimeout)
	case r.failures > 0:
		return fmt.Sprintf("failed: %d of %d calls failed, the first with: %v", r.failures, r.started, r.firstError)
	case len(r.latencies) == 0 && r.rows == 0:
		return fmt.Sprintf("no call completed, and no response arrived within the %v window", r.window)
	}
	return ""
}

// stallSilence returns how long a call that hits its deadline must have
// received nothing to count as stalled rather than slow: half its
// deadline.
func stallSilence(callTimeout time.Duration) time.Duration {
	return callTimeout / 2
}

// worker is one caller's share of a run. Only its own goroutine touches
// it until the run merges the workers.
type worker struct {
	started, completed, stalls, slowCalls, failures int
	firstError                                      error
	latencies                                       []time.Duration
	rows, bytes                                     int64
}

// measure runs spec against conn. Its error is only the context's, when
// the run was interrupted; the calls' failures are in the result.
func measure(ctx context.Context, conn *grpc.ClientConn, spec runSpec) (runResult, error) {
	// Sample the target's memory while the callers run, and take its CPU
	// time before and after them.
	stopSampling, peak := sampleRSS(spec.pid)
	cpuBefore, cpuErr := cpuTime(spec.pid)

	// Run the callers until the window closes, then let their open calls
	// end.
	start := time.Now()
	end := start.Add(spec.duration)
	workers := make([]worker, spec.concurrency)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() { workers[i].loop(ctx, conn, spec, end) })
	}
	wg.Wait()
	cpuAfter, cpuAfterErr := cpuTime(spec.pid)
	stopSampling()
	if err := ctx.Err(); err != nil {
		return runResult{}, err
	}

	// Merge what the callers counted.
	result := runResult{concurrency: spec.concurrency, window: spec.duration, callTimeout: spec.callTimeout, peakRSS: peak()}
	if spec.pid != 0 && cpuErr == nil && cpuAfterErr == nil {
		result.cpu = cpuAfter - cpuBefore
	}
	for _, w := range workers {
		result.started += w.started
		result.completed += w.completed
		result.stalls += w.stalls
		result.slowCalls += w.slowCalls
		result.failures += w.failures
		if result.firstError == nil {
			result.firstError = w.firstError
		}
		result.latencies = append(result.latencies, w.latencies...)
		result.rows += w.rows
		result.bytes += w.bytes
	}
	slices.Sort(result.latencies)
	return result, nil
}

// loop makes calls one after the other until end. It stops at its first
// failed call, so that a stalled target holds the run up for one call
// timeout at most.
func (w *worker) loop(ctx context.Context, conn *grpc.ClientConn, spec runSpec, end time.Time) {
	var lastResponse time.Time
	received := func(size int) {
		lastResponse = time.Now()
		if lastResponse.Before(end) {
			w.rows += int64(spec.call.rowsPerMessage)
			w.bytes += int64(size)
		}
	}
	for time.Now().Before(end) {
		callCtx, cancel := context.WithTimeout(ctx, spec.callTimeout)
		began := time.Now()
		lastResponse = began
		err := spec.call.call(callCtx, conn, received)
		finished := time.Now()
		hitDeadline := errors.Is(callCtx.Err(), context.DeadlineExceeded)
		cancel()
		w.started++
		switch {
		case ctx.Err() != nil:
			return // interrupted: the run's result is dropped
		case err == nil:
			w.latencies = append(w.latencies, finished.Sub(began))
			if finished.Before(end) {
				w.completed++
			}
		case hitDeadline && finished.Sub(lastResponse) >= stallSilence(spec.callTimeout):
			w.stalls++
			return
		case hitDeadline:
			w.slowCalls++
			return
		default:
			w.failures++
			if w.firstError == nil {
				w.firstError = err
			}
			return
		}
	}
}

// sampleRSS samples the resident memory of pid and its descendants every
// rssInterval until stop is called, after which peak returns the largest
// sample. With pid 0, or where memory cannot be read, peak returns 0.
func sampleRSS(pid int) (stop func(), peak func() int64) {
	if pid == 0 {
		return func() {}, func() int64 { return 0 }
	}
	var largest int64
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		ticker := time.NewTicker(rssInterval)
		defer ticker.Stop()
		for {
			if rss, err := residentBytes(pid); err == nil {
				largest = max(largest, rss)
			}
			select {
			case <-done:
				return
			case <-ticker.C:
			}
		}
	}()
	stop = func() {
		close(done)
		<-finished
	}
	return stop, func() int64 { return largest }
}
