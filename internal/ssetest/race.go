//go:build race

package ssetest

// raceEnabled is true when this test binary was built with -race.
const raceEnabled = true
