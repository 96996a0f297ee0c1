package bench

import (
	"math"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	tests := []struct {
		name   string
		values []float64
		want   float64
	}{
		{"one value", []float64{7}, 7},
		{"odd count, unsorted", []float64{9, 1, 5}, 5},
		{"even count takes the mean of the middle two", []float64{4, 1, 3, 2}, 2.5},
		{"NaNs are ignored", []float64{math.NaN(), 3, 1, math.NaN(), 2}, 2},
		{"duplicates", []float64{2, 2, 2, 10}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := median(tt.values); got != tt.want {
				t.Errorf("median(%v) = %v, want %v", tt.values, got, tt.want)
			}
		})
	}
}

func TestMedianOfNothingIsNaN(t *testing.T) {
	for _, values := range [][]float64{nil, {math.NaN()}} {
		if got := median(values); !math.IsNaN(got) {
			t.Errorf("median(%v) = %v, want NaN", values, got)
		}
	}
}

func TestMedianKeepsInputOrder(t *testing.T) {
	values := []float64{3, 1, 2}
	median(values)
	if values[0] != 3 || values[1] != 1 || values[2] != 2 {
		t.Errorf("median reordered its input to %v", values)
	}
}

func TestPercentile(t *testing.T) {
	// 1ms to 100ms: the nearest-rank p-th percentile is p milliseconds.
	var hundred []time.Duration
	for i := 1; i <= 100; i++ {
		hundred = append(hundred, time.Duration(i)*time.Millisecond)
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"p50 of 100", hundred, 50, 50 * time.Millisecond},
		{"p99 of 100", hundred, 99, 99 * time.Millisecond},
		{"p100 is the largest", hundred, 100, 100 * time.Millisecond},
		{"p0.1 is the smallest", hundred, 0.1, time.Millisecond},
		{"p99 of 10 is the largest", hundred[:10], 99, 10 * time.Millisecond},
		{"p50 of 10 rounds the rank up", hundred[:10], 50, 5 * time.Millisecond},
		{"p50 of 3 is the middle", hundred[:3], 50, 2 * time.Millisecond},
		{"one value", []time.Duration{time.Second}, 99, time.Second},
		{"no values", nil, 50, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(%d values, %v) = %v, want %v", len(tt.sorted), tt.p, got, tt.want)
			}
		})
	}
}

func TestRatio(t *testing.T) {
	tests := []struct {
		name        string
		value, base float64
		want        float64
	}{
		{"half", 50, 100, 0.5},
		{"same", 7, 7, 1},
		{"double", 20, 10, 2},
		{"zero value", 0, 10, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ratio(tt.value, tt.base); got != tt.want {
				t.Errorf("ratio(%v, %v) = %v, want %v", tt.value, tt.base, got, tt.want)
			}
		})
	}
}

func TestRatioWithoutBaseIsNaN(t *testing.T) {
	cases := [][2]float64{{1, 0}, {1, -1}, {1, math.NaN()}, {math.NaN(), 1}}
	for _, c := range cases {
		if got := ratio(c[0], c[1]); !math.IsNaN(got) {
			t.Errorf("ratio(%v, %v) = %v, want NaN", c[0], c[1], got)
		}
	}
}

func TestRunResultRates(t *testing.T) {
	r := runResult{
		window:    2 * time.Second,
		completed: 500,
		rows:      4000,
		bytes:     3_000_000,
		latencies: []time.Duration{time.Millisecond, 2 * time.Millisecond, 3 * time.Millisecond, 40 * time.Millisecond},
	}
	checks := []struct {
		name      string
		got, want float64
	}{
		{"calls per second", r.callsPerSecond(), 250},
		{"rows per second", r.rowsPerSecond(), 2000},
		{"MB per second", r.megabytesPerSecond(), 1.5},
		{"p50 in ms", r.latency(50), 2},
		{"p99 in ms", r.latency(99), 40},
	}
	for _, check := range checks {
		if check.got != check.want {
			t.Errorf("%s = %v, want %v", check.name, check.got, check.want)
		}
	}
	if got := (runResult{}).latency(50); !math.IsNaN(got) {
		t.Errorf("latency without calls = %v, want NaN", got)
	}
	if got := (runResult{}).rssMiB(); !math.IsNaN(got) {
		t.Errorf("rssMiB without samples = %v, want NaN", got)
	}
}

func TestRunResultProblem(t *testing.T) {
	tests := []struct {
		name   string
		result runResult
		want   string
	}{
		{"fine", runResult{started: 10, completed: 10, latencies: []time.Duration{1}}, ""},
		{"stalled", runResult{started: 4, stalls: 4, callTimeout: 10 * time.Second}, "stalled: 4 of 4 calls hit the 10s deadline, after no response message for at least 5s"},
		{"too slow", runResult{started: 9, slowCalls: 2, callTimeout: time.Second}, "too slow: 2 of 9 calls were still receiving responses at the 1s deadline"},
		{"nothing arrived", runResult{started: 1, window: time.Second}, "no call completed, and no response arrived within the 1s window"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.result.problem(); got != tt.want {
				t.Errorf("problem() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestFormatting(t *testing.T) {
	checks := []struct {
		name, got, want string
	}{
		{"count", formatCount(1234567.4), "1,234,567"},
		{"small count", formatCount(999), "999"},
		{"count of NaN", formatCount(math.NaN()), noValue},
		{"sub-millisecond", formatMillis(0.4123), "0.412"},
		{"milliseconds", formatMillis(12.34), "12.3"},
		{"long milliseconds", formatMillis(1234.5), "1,234"},
		{"ratio", formatRatio(0.8149), "0.81×"},
		{"ratio of NaN", formatRatio(math.NaN()), noValue},
		{"MiB", formatMiB(123.4), "123"},
	}
	for _, check := range checks {
		if check.got != check.want {
			t.Errorf("%s: got %q, want %q", check.name, check.got, check.want)
		}
	}
}
