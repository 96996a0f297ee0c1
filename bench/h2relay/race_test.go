//go:build race

package h2relay

// raceEnabled is true when this test binary was built with -race.
const raceEnabled = true
