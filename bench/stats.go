package bench

import (
	"math"
	"slices"
	"time"
)

// median returns the middle of values, or the mean of the two middle ones
// for an even count. It returns NaN for no values, and ignores NaNs.
func median(values []float64) float64 {
	sorted := make([]float64, 0, len(values))
	for _, value := range values {
		if !math.IsNaN(value) {
			sorted = append(sorted, value)
		}
	}
	if len(sorted) == 0 {
		return math.NaN()
	}
	slices.Sort(sorted)
	middle := len(sorted) / 2
	if len(sorted)%2 == 1 {
		return sorted[middle]
	}
	return (sorted[middle-1] + sorted[middle]) / 2
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted, which must be in ascending order: the smallest value that at
// least p percent of the values do not exceed. It returns 0 for no values.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// ratio returns value divided by base, or NaN when either is NaN or base
// is not positive, so that a missing baseline shows as no ratio.
func ratio(value, base float64) float64 {
	if math.IsNaN(value) || math.IsNaN(base) || base <= 0 {
		return math.NaN()
	}
	return value / base
}
