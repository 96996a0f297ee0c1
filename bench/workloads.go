package bench

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"
)

// maxWarmUp bounds the unmeasured run before each workload setting.
const maxWarmUp = 500 * time.Millisecond

// point identifies one measured setting: a workload at one concurrency
// level, for one target.
type point struct {
	workload string
	level    int
	target   string
}

// results collects the runs that count, and the reason a target has none
// at a point.
type results struct {
	runs map[point][]runResult
	// problems holds one word, such as "stalled", for the point where a
	// target was left out of a workload.
	problems map[point]string
	// idleRSS holds each target's resident memory right after a fresh
	// start, in bytes, once per restart.
	idleRSS map[string][]int64
}

func newResults() *results {
	return &results{runs: map[point][]runResult{}, problems: map[point]string{}, idleRSS: map[string][]int64{}}
}

// medianOf returns the median over the runs at p of metric, or NaN when
// there are none.
func (r *results) medianOf(p point, metric func(runResult) float64) float64 {
	values := make([]float64, 0, len(r.runs[p]))
	for _, run := range r.runs[p] {
		values = append(values, metric(run))
	}
	return median(values)
}

// runWorkloads measures the selected workloads, in the order of
// AllWorkloads.
func (b *bench) runWorkloads(ctx context.Context) error {
	small, err := newSumOfRowsCall(b.opts.SmallRows)
	if err != nil {
		return err
	}
	large, err := newEchoCall(b.opts.LargeBundles, b.opts.LargeRows)
	if err != nil {
		return err
	}
	memoryLargeCall, err := newEchoCall(b.opts.MemoryBundles, b.opts.LargeRows)
	if err != nil {
		return err
	}
	for _, workload := range AllWorkloads {
		if !slices.Contains(b.opts.Workloads, workload) {
			continue
		}
		switch workload {
		case WorkloadSmall:
			err = b.compare(ctx, WorkloadSmall, []int{b.opts.Concurrency}, small, false)
		case WorkloadLarge:
			err = b.compare(ctx, WorkloadLarge, []int{b.opts.LargeConcurrency}, large, false)
		case WorkloadSweep:
			err = b.compare(ctx, WorkloadSweep, b.opts.Levels, small, true)
		case WorkloadMemory:
			err = b.memory(ctx, small, memoryLargeCall)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// compare runs call at each level against every target still in the
// workload: a warm-up each, then the rounds, each round over all targets
// in turn. A target that stalls or fails is left out of the rest of the
// workload. With fresh set, each level starts with newly started target
// processes, so that their memory shows what that level needs and not
// what an earlier one left behind.
func (b *bench) compare(ctx context.Context, workload string, levels []int, call *callSpec, fresh bool) error {
	dropped := map[string]bool{}
	warmUp := min(b.opts.Duration/4, maxWarmUp)
	for _, level := range levels {
		// Restart the target processes, when asked.
		if fresh {
			for _, t := range b.live(dropped) {
				if err := b.restart(ctx, t, workloadTitles[workload]); err != nil {
					return err
				}
			}
		}

		// Warm up, so that connections, flow control windows and heaps
		// have grown to what this level needs before it counts.
		for _, t := range b.live(dropped) {
			if err := b.runOnce(ctx, t, point{workload, level, t.name}, 0, call, warmUp, dropped); err != nil {
				return err
			}
		}

		// Measure, the targets in turn within each round.
		for round := 1; round <= b.opts.Rounds; round++ {
			for _, t := range b.live(dropped) {
				if err := b.runOnce(ctx, t, point{workload, level, t.name}, round, call, b.opts.Duration, dropped); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// memory measures each target's resident memory under small calls and
// under large ones, at the same concurrency, each time in a freshly
// started process so that memory kept from earlier runs does not count.
// The direct connection has no process of its own to restart or measure,
// and runs for the rates only.
func (b *bench) memory(ctx context.Context, small, large *callSpec) error {
	halves := []struct {
		workload string
		call     *callSpec
	}{{memorySmall, small}, {memoryLarge, large}}
	dropped := map[string]map[string]bool{memorySmall: {}, memoryLarge: {}}
	for round := 1; round <= b.opts.Rounds; round++ {
		for _, t := range b.live(nil) {
			for _, half := range halves {
				if dropped[half.workload][t.name] || b.dead[t.name] {
					continue
				}

				// Start from a fresh process.
				if err := b.restart(ctx, t, "the memory workload"); err != nil {
					return err
				}
				if b.dead[t.name] {
					continue
				}
				if t.pid() != 0 {
					if rss, err := residentBytes(t.pid()); err == nil {
						b.results.idleRSS[t.name] = append(b.results.idleRSS[t.name], rss)
					}
				}

				// Measure.
				p := point{half.workload, b.opts.MemoryConcurrency, t.name}
				if err := b.runOnce(ctx, t, p, round, half.call, b.opts.Duration, dropped[half.workload]); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// restart starts a fresh process for a target that has one. A target
// that fails to restart becomes a finding and is out of the rest of the
// run. The error is only the context's, when the run was interrupted.
func (b *bench) restart(ctx context.Context, t *target, purpose string) error {
	if t.process == nil {
		return nil
	}
	if err := t.restart(ctx); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		b.dead[t.name] = true
		b.finding("%s: failed to restart for %s: %v; left out of the rest of the run", t.name, purpose, err)
	}
	return nil
}

// live returns the targets whose process runs and that dropped does not
// name, in table order.
func (b *bench) live(dropped map[string]bool) []*target {
	var targets []*target
	for _, t := range b.targets {
		if !b.dead[t.name] && !dropped[t.name] {
			targets = append(targets, t)
		}
	}
	return targets
}

// runOnce makes one run of call against t at p; round 0 is a warm-up,
// which does not count. A run with a problem becomes a finding and adds
// t to dropped. The error is only the context's, when the run was
// interrupted.
func (b *bench) runOnce(ctx context.Context, t *target, p point, round int, call *callSpec, duration time.Duration, dropped map[string]bool) error {
	// A target whose process ended is out of the whole run.
	if problem := t.exitedProblem(); problem != "" {
		b.dead[t.name] = true
		b.results.problems[p] = "exited"
		b.finding("%s, %s: %s", t.name, describeRun(p, round, b.opts.Rounds), problem)
		return nil
	}

	// Run, and judge the result.
	result, err := measure(ctx, t.conn, runSpec{call: call, concurrency: p.level, duration: duration, callTimeout: b.opts.CallTimeout, pid: t.pid()})
	if err != nil {
		return err
	}
	t.calls += result.started
	if problem := result.problem(); problem != "" {
		dropped[t.name] = true
		b.results.problems[p] = result.shortProblem()
		b.finding("%s, %s: %s; left out of the rest of this workload", t.name, describeRun(p, round, b.opts.Rounds), problem)
		return nil
	}
	if round > 0 {
		b.results.runs[p] = append(b.results.runs[p], result)
	}
	fmt.Fprintf(b.opts.Progress, "%7s  %-50s %-14s %s\n", time.Since(b.started).Round(time.Second), describeRun(p, round, b.opts.Rounds), t.name, summarize(p.workload, result))
	return nil
}

// shortProblem names the problem of a run in one word, for a table cell.
func (r runResult) shortProblem() string {
	switch {
	case r.stalls > 0:
		return "stalled"
	case r.slowCalls > 0:
		return "too slow"
	case r.failures > 0:
		return "failed"
	}
	return "no calls"
}

// workloadTitles name each workload, and each half of the memory one, in
// progress lines and findings.
var workloadTitles = map[string]string{
	WorkloadSmall: "small calls",
	WorkloadLarge: "large calls",
	WorkloadSweep: "sweep",
	memorySmall:   "memory, small calls",
	memoryLarge:   "memory, large calls",
}

// describeRun names a run for progress lines and findings.
func describeRun(p point, round, rounds int) string {
	text := fmt.Sprintf("%s, %d concurrent", workloadTitles[p.workload], p.level)
	if round == 0 {
		return text + ", warm-up"
	}
	return fmt.Sprintf("%s, round %d of %d", text, round, rounds)
}

// summarize returns a run's main numbers for a progress line.
func summarize(workload string, r runResult) string {
	var text string
	if workload == WorkloadLarge || workload == memoryLarge {
		text = fmt.Sprintf("%s rows/s  %.1f MB/s  p50 %s ms", formatCount(r.rowsPerSecond()), r.megabytesPerSecond(), formatMillis(r.latency(50)))
	} else {
		text = fmt.Sprintf("%s calls/s  p50 %s ms  p99 %s ms", formatCount(r.callsPerSecond()), formatMillis(r.latency(50)), formatMillis(r.latency(99)))
	}
	if cpu := r.cpuPerCall(); !math.IsNaN(cpu) && workload != WorkloadLarge && workload != memoryLarge {
		text += fmt.Sprintf("  CPU %.0f µs/call", cpu)
	}
	if rss := r.rssMiB(); !math.IsNaN(rss) {
		text += fmt.Sprintf("  RSS %.0f MiB", rss)
	}
	return text
}
