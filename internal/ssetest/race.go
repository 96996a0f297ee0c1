//go:build race

package ssetest

// RaceEnabled is true when this binary was built with -race. Binary builds
// programs the same way, and tests shrink work that the detector slows.
const RaceEnabled = true
