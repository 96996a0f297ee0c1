package h2relay

import "golang.org/x/net/http2"

// worker carries the relaying work of one goroutine across connections.
// Because a goroutine holds one connection's lock at a time, work on
// another connection waits in acts until apply runs it. A reader's worker
// also defers waking writers until the reader would block, so that many
// frames leave in one write.
type worker struct {
	immediate bool // wake writers at once, because the goroutine is not a reader
	acts      []action
	dirty     []*conn // connections whose idle writer has output
}

// action is work on another connection's stream.
type action struct {
	reset bool // reset st because its other half ended with code, instead of crediting n
	st    *stream
	n     int64 // bytes of window to return to st's sender
	code  http2.ErrCode
}

// credit returns n bytes of window to st's sender, once apply runs.
func (w *worker) credit(st *stream, n int64) {
	if n > 0 {
		w.acts = append(w.acts, action{st: st, n: n})
	}
}

// resetPeer ends st's other half, because st ended with code, once apply
// runs.
func (w *worker) resetPeer(st *stream, code http2.ErrCode) {
	w.acts = append(w.acts, action{reset: true, st: st.peer, code: code})
}

// apply runs the queued actions, and those that they queue. The caller
// holds no lock.
func (w *worker) apply() {
	for i := 0; i < len(w.acts); i++ {
		a := w.acts[i]
		c := a.st.conn
		c.mu.Lock()
		if a.reset {
			c.peerResetLocked(w, a.st, a.code)
		} else {
			c.creditLocked(a.st, a.n)
		}
		w.unlock(c)
	}
	clear(w.acts)
	w.acts = w.acts[:0]
}

// unlock releases c.mu, and wakes c's writer if it is idle and has output,
// at once or at the reader's next flushDirty.
func (w *worker) unlock(c *conn) {
	if c.writerIdle && len(c.wbuf) > 0 {
		if w.immediate {
			c.writerIdle = false
			c.wake.Signal()
		} else if n := len(w.dirty); n == 0 || w.dirty[n-1] != c {
			w.dirty = append(w.dirty, c)
		}
	}
	c.mu.Unlock()
}

// flushDirty wakes the writers that unlock deferred.
func (w *worker) flushDirty() {
	for i, c := range w.dirty {
		c.mu.Lock()
		if c.writerIdle && len(c.wbuf) > 0 {
			c.writerIdle = false
			c.wake.Signal()
		}
		c.mu.Unlock()
		w.dirty[i] = nil
	}
	w.dirty = w.dirty[:0]
}
