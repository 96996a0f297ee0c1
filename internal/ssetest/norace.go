//go:build !race

package ssetest

// raceEnabled is whether this test binary was built with -race.
const raceEnabled = false
