package gateway

// growStack gives the calling goroutine, at a shallow point, the stack that
// a whole call needs.
//
// gRPC runs each call's handler on a new goroutine, whose stack starts at
// 2 KiB. Opening the plugin's stream goes about 10 KiB deeper, and Go grows
// a stack by copying it, frame by frame, each time it runs out: on small
// calls that copying was a tenth of the gateway's CPU. One function with a
// large frame, called first, makes Go grow the stack once, while it holds
// only a few frames, to the 16 KiB size that fits the rest of the call.
// Called with nil, growStack touches nothing: the frame it reserves is
// what matters. Measured in docs/PERFORMANCE.md ("Changes measured").
//
//go:noinline
func growStack(touch *int) byte {
	if touch != nil {
		// Never taken by the gateway; it keeps the frame from being
		// optimised away.
		var frame [12 << 10]byte
		frame[uint(*touch)%uint(len(frame))] = 1
		return frame[uint(*touch+1)%uint(len(frame))]
	}
	return 0
}
