package routing

import (
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/connectivity"
)

// namedPicker is a child picker that the test identifies by name.
type namedPicker string

func (namedPicker) Pick(balancer.PickInfo) (balancer.PickResult, error) {
	return balancer.PickResult{}, balancer.ErrNoSubConnAvailable
}

// holdingClientConn records the pickers published to gRPC. While hold is
// set, the next UpdateState signals entered and waits for release.
type holdingClientConn struct {
	balancer.ClientConn

	mu        sync.Mutex
	published []balancer.Picker
	hold      bool
	entered   chan struct{}
	release   chan struct{}
}

func (c *holdingClientConn) UpdateState(state balancer.State) {
	c.mu.Lock()
	hold := c.hold
	c.hold = false
	c.mu.Unlock()
	if hold {
		close(c.entered)
		<-c.release
	}
	c.mu.Lock()
	c.published = append(c.published, state.Picker)
	c.mu.Unlock()
}

// lastChild returns the child picker inside the picker published last.
func (c *holdingClientConn) lastChild() balancer.Picker {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.published[len(c.published)-1].(*cappedPicker).child
}

// TestCappedPublishKeepsNewest has a finishing call publish the child's
// state while the child publishes a newer one. gRPC is held inside the
// call's publish until the child's publish has either finished or is
// waiting its turn. The picker left installed must wrap the newer state.
func TestCappedPublishKeepsNewest(t *testing.T) {
	cc := &holdingClientConn{entered: make(chan struct{}), release: make(chan struct{})}
	b := cappedBuilder{}.Build(cc, balancer.BuildOptions{}).(*cappedBalancer)
	b.cc.UpdateState(balancer.State{ConnectivityState: connectivity.Ready, Picker: namedPicker("older")})

	// A call ends and publishes the older state; gRPC holds it.
	cc.mu.Lock()
	cc.hold = true
	cc.mu.Unlock()
	callDone := make(chan struct{})
	go func() {
		defer close(callDone)
		b.publish()
	}()
	<-cc.entered

	// The child publishes a newer state meanwhile.
	childDone := make(chan struct{})
	go func() {
		defer close(childDone)
		b.cc.UpdateState(balancer.State{ConnectivityState: connectivity.Ready, Picker: namedPicker("newer")})
	}()
	// A goroutine blocked on a mutex signals nothing, so poll the stacks.
	deadline := time.Now().Add(10 * time.Second)
	for !isClosed(childDone) && !waitingToPublish() {
		if time.Now().After(deadline) {
			t.Fatal("the child's publish neither finished nor waited within 10s")
		}
		time.Sleep(time.Millisecond)
	}

	close(cc.release)
	<-callDone
	<-childDone
	if got := cc.lastChild(); got != namedPicker("newer") {
		t.Errorf("installed picker wraps %v, want the newer state's", got)
	}
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// waitingToPublish reports whether a goroutine waits for the lock of
// cappedBalancer.publish, as the child's publish does while a call's
// publish is under way.
func waitingToPublish() bool {
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	for stack := range strings.SplitSeq(stacks, "\n\n") {
		if strings.Contains(stack, "(*cappedBalancer).publish") &&
			strings.Contains(stack, "Mutex).lockSlow") &&
			!strings.Contains(stack, "(*holdingClientConn).UpdateState") {
			return true
		}
	}
	return false
}
