package fswatch

import "time"

// SetRecheckInterval makes Watch calls that start from now on recheck
// their folders' paths every d, until the test ends.
func SetRecheckInterval(t interface{ Cleanup(func()) }, d time.Duration) {
	before := recheckInterval
	recheckInterval = d
	t.Cleanup(func() { recheckInterval = before })
}
