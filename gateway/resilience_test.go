package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/examples/plugin/example"
	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/ssepb"
)

// resilResult is what a client saw of one ExecuteFunction call.
type resilResult struct {
	// replica is the x-example-plugin response header, which names the
	// plugin that replied, or "" when no header arrived.
	replica  string
	replies  []*ssepb.BundledRows
	err      error
	duration time.Duration
}

// resilCall makes an ExecuteFunction call of function id as Qlik does. It
// streams bundles and half-closes while it reads the replies. It does not
// stop the test, so that goroutines may call it.
func resilCall(t *testing.T, ctx context.Context, client ssepb.ConnectorClient, id int32, bundles ...*ssepb.BundledRows) resilResult {
	t.Helper()
	start := time.Now()
	md, err := ssepb.FunctionCallMetadata(id, &ssepb.CommonRequestHeader{AppId: "app", UserId: "user", Cardinality: 1})
	if err != nil {
		return resilResult{err: err}
	}
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ctx, md))
	defer cancel()

	// Send in the background, as Qlik does, while the replies arrive.
	stream, err := client.ExecuteFunction(ctx)
	if err != nil {
		return resilResult{err: err, duration: time.Since(start)}
	}
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for _, bundle := range bundles {
			if stream.Send(bundle) != nil {
				return // the status comes from Recv
			}
		}
		stream.CloseSend()
	}()

	// Read the replies to the end of the call.
	var result resilResult
	for {
		reply, err := stream.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				result.err = err
			}
			break
		}
		result.replies = append(result.replies, reply)
	}
	result.duration = time.Since(start)
	cancel() // unblocks a send still waiting after the call ended
	<-sent

	if header, err := stream.Header(); err == nil {
		if names := header.Get(example.InstanceHeader); len(names) > 0 {
			result.replica = names[0]
		}
	}
	return result
}

// resilEcho makes an Echo call with one bundle of one row and returns the
// result, or fails the test when the call fails.
func resilEcho(t *testing.T, ctx context.Context, client ssepb.ConnectorClient) resilResult {
	t.Helper()
	result := resilCall(t, ctx, client, example.FunctionEcho, ssetest.StringBundle("ping"))
	if result.err != nil {
		t.Fatalf("Echo call = %v, want OK", result.err)
	}
	return result
}

// resilSumBundles returns the request of a SumOfRows call: count bundles
// of rows rows with two numeric columns.
func resilSumBundles(count, rows int) []*ssepb.BundledRows {
	bundles := make([]*ssepb.BundledRows, count)
	for i := range bundles {
		bundles[i] = ssetest.NumericBundle(rows, 2)
	}
	return bundles
}

// checkSums describes how the replies of a SumOfRows call on
// resilSumBundles differ from the right result, which has one reply bundle
// per request bundle and i + (i+1) = 2i+1 in row i. It returns "" for a
// right result.
func checkSums(replies []*ssepb.BundledRows, count, rows int) string {
	if len(replies) != count {
		return fmt.Sprintf("%d reply bundles, want %d", len(replies), count)
	}
	for b, bundle := range replies {
		if len(bundle.GetRows()) != rows {
			return fmt.Sprintf("bundle %d has %d rows, want %d", b, len(bundle.GetRows()), rows)
		}
		for i, row := range bundle.GetRows() {
			if got, want := row.GetDuals()[0].GetNumData(), float64(2*i+1); got != want {
				return fmt.Sprintf("bundle %d row %d = %v, want %v", b, i, got, want)
			}
		}
	}
	return ""
}

// waitServedByAll makes Echo calls until every named replica has served
// one, so that the gateway's pool has a ready connection to each.
func waitServedByAll(t *testing.T, ctx context.Context, client ssepb.ConnectorClient, names ...string) {
	t.Helper()
	// The pool logs no record when its connection to a replica is ready,
	// so only calls show it.
	seen := map[string]bool{}
	deadline := time.Now().Add(15 * time.Second)
	for {
		seen[resilEcho(t, ctx, client).replica] = true
		missing := false
		for _, name := range names {
			missing = missing || !seen[name]
		}
		if !missing {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas that served a call within 15s = %v, want all of %v", seen, names)
		}
	}
}

// resilWait polls condition every 10 ms until it holds, or fails the test
// after timeout with what describes. It is for conditions that no event
// signals, such as a metric's value or a count that goroutines raise.
func resilWait(t *testing.T, timeout time.Duration, what string, condition func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !condition() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %v", what, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// callRecords returns the gateway's access log records of ExecuteFunction
// calls.
func callRecords(gw *ssetest.Gateway) []map[string]any {
	var records []map[string]any
	for _, record := range gw.Logs.Records("call") {
		if record["method"] == "/qlik.sse.Connector/ExecuteFunction" {
			records = append(records, record)
		}
	}
	return records
}

// attempts returns the attempts field of a call record.
func attempts(record map[string]any) int {
	n, _ := record["attempts"].(float64)
	return int(n)
}

// TestReplicaKilledDuringCalls SIGKILLs one of two replicas under 200
// concurrent SumOfRows calls. Every call that had no reply from it must
// succeed, replayed on the other replica. Only calls it had replied to may
// fail, with Unavailable. The replica is frozen with SIGSTOP before the
// kill, so the calls sent to it meanwhile certainly have no reply when it
// dies. The balancer is round_robin, which keeps sending every other call
// to the frozen replica.
func TestReplicaKilledDuringCalls(t *testing.T) {
	t.Parallel() // about 3s, mostly starting the plugin processes
	const calls, bundles, rows = 200, 3, 3
	doomed := ssetest.StartRestartablePlugin(t, "doomed", "--delay", "20ms")
	survivor := ssetest.StartRestartablePlugin(t, "survivor", "--delay", "20ms")
	engine := ssetest.Engine(doomed.Address, survivor.Address)
	engine.Balancer = config.BalancerRoundRobin
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", nil)},
		Engines:   map[string]*config.Engine{"R": engine},
	})
	_, client := ssetest.DialConn(t, gw.Addrs[0])
	ctx := testContext(t)
	waitServedByAll(t, ctx, client, doomed.Name, survivor.Name)
	warmUpCalls := len(callRecords(gw))

	// Launch the calls in two waves. Each records its result.
	results := make([]resilResult, calls)
	var finished [2]atomic.Int64
	var wg sync.WaitGroup
	launch := func(wave int, first, last int) {
		for i := first; i < last; i++ {
			wg.Go(func() {
				callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				results[i] = resilCall(t, callCtx, client, example.FunctionSumOfRows, resilSumBundles(bundles, rows)...)
				finished[wave].Add(1)
			})
		}
	}

	// Wave one runs on both replicas. Freeze the doomed one while it is
	// busy with its share.
	launch(0, 0, calls/2)
	resilWait(t, 10*time.Second, "first calls finished", func() bool { return finished[0].Load() >= 5 })
	if err := doomed.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP to the doomed plugin: %v", err)
	}

	// Wave two: round_robin sends half of it to the frozen replica, which
	// replies nothing. Kill it once the survivor's share is done.
	launch(1, calls/2, calls)
	resilWait(t, 10*time.Second, "survivor's share of the second wave finished", func() bool { return finished[1].Load() >= calls/4-5 })
	doomed.Kill(t)
	wg.Wait()

	// Every call either succeeded with the right sums, or had a reply from
	// the killed replica and failed with Unavailable.
	var succeeded, failedAfterReply int
	for i, result := range results {
		switch {
		case result.err == nil:
			succeeded++
			if problem := checkSums(result.replies, bundles, rows); problem != "" {
				t.Errorf("call %d (replied by %q): %s", i, result.replica, problem)
			}
		case result.replica == doomed.Name:
			failedAfterReply++
			if code := status.Code(result.err); code != codes.Unavailable {
				t.Errorf("call %d, replied to by the killed replica, failed with %v, want Unavailable", i, result.err)
			}
		default:
			t.Errorf("call %d without a reply from the killed replica = %v (header from %q), want OK", i, result.err, result.replica)
		}
	}

	// The gateway's records tell which calls were replayed.
	records := callRecords(gw)[warmUpCalls:]
	if len(records) != calls {
		t.Fatalf("got %d call records, want %d", len(records), calls)
	}
	replayed := 0
	for _, record := range records {
		if attempts(record) < 2 {
			continue
		}
		replayed++
		if record["code"] != "OK" {
			t.Errorf("replayed call record code = %v, want OK; record: %v", record["code"], record)
		}
		if record["backend"] != survivor.Address {
			t.Errorf("replayed call record backend = %v, want the survivor %s", record["backend"], survivor.Address)
		}
	}
	if replayed == 0 {
		t.Errorf("replayed calls = 0, want the calls sent to the frozen replica replayed")
	}
	t.Logf("%d calls: %d succeeded, of which %d were replayed; %d had a reply from the killed replica and failed",
		calls, succeeded, replayed, failedAfterReply)
}

// TestAllReplicasRestart makes calls while every replica of an engine is
// down. When both replicas are back on their addresses after an outage of
// at least 5 s, every call succeeds, and none waits past reconnect_buffer
// (15s here). When the outage outlasts reconnect_buffer (2s here), calls
// fail with Unavailable after 2s. Their message gives the wait and each
// replica's state and last error.
func TestAllReplicasRestart(t *testing.T) {
	t.Parallel() // about 8s: a 5s outage, and 2s waits in parallel

	// setUp starts two replicas behind a gateway whose reconnect_buffer is
	// wait, makes sure both serve, and kills both.
	setUp := func(t *testing.T, wait time.Duration) ([]*ssetest.RestartablePlugin, *ssetest.Gateway, ssepb.ConnectorClient) {
		t.Helper()
		replicas := []*ssetest.RestartablePlugin{ssetest.StartRestartablePlugin(t, "first"), ssetest.StartRestartablePlugin(t, "second")}
		engine := ssetest.Engine(replicas[0].Address, replicas[1].Address)
		engine.ReconnectBuffer = &wait
		// Probe often, so that the replicas are marked failing soon.
		engine.ProbeInterval = 500 * time.Millisecond
		gw := ssetest.StartGateway(t, &config.Config{
			Listeners: []config.Listener{ssetest.Listen("R", nil)},
			Engines:   map[string]*config.Engine{"R": engine},
		})
		_, client := ssetest.DialConn(t, gw.Addrs[0])
		waitServedByAll(t, testContext(t), client, "first", "second")
		for _, replica := range replicas {
			replica.Kill(t)
		}
		return replicas, gw, client
	}

	t.Run("outage shorter than reconnect_buffer", func(t *testing.T) {
		t.Parallel()
		const reconnectBuffer, calls, spacing = 15 * time.Second, 20, 250 * time.Millisecond
		replicas, _, client := setUp(t, reconnectBuffer)
		ctx := testContext(t)

		// A call arrives every 250ms for the 5s of the outage.
		results := make([]resilResult, calls)
		var wg sync.WaitGroup
		outageStart := time.Now()
		for i := range calls {
			timer := time.NewTimer(spacing)
			<-timer.C // the outage's pace, not a synchronisation
			wg.Go(func() {
				results[i] = resilCall(t, ctx, client, example.FunctionEcho, ssetest.StringBundle("during the outage"))
			})
		}
		for _, replica := range replicas {
			replica.Restart(t)
		}
		restarted := time.Now()
		wg.Wait()
		t.Logf("outage of %v; calls ended %v after the replicas listened again", restarted.Sub(outageStart), time.Since(restarted))

		var longest time.Duration
		for i, result := range results {
			if result.err != nil {
				t.Errorf("call %d during the outage = %v, want OK", i, result.err)
			}
			if result.duration >= reconnectBuffer {
				t.Errorf("call %d during the outage took %v, want less than reconnect_buffer (%v)", i, result.duration, reconnectBuffer)
			}
			longest = max(longest, result.duration)
		}
		// The first call arrived 250ms into the outage and waited for its end.
		if minimum := restarted.Sub(outageStart) - time.Second; longest < minimum {
			t.Errorf("longest call took %v, want at least %v: the calls did not wait for the replicas", longest, minimum)
		}
		t.Logf("%d calls during the outage all succeeded; the longest took %v", calls, longest)
	})

	t.Run("outage longer than reconnect_buffer", func(t *testing.T) {
		t.Parallel()
		const reconnectBuffer = 2 * time.Second
		replicas, gw, client := setUp(t, reconnectBuffer)
		for _, replica := range replicas {
			// The replica logs its lost connection, but a later probe's
			// error replaces lastError without a record, so poll the page.
			resilWait(t, 10*time.Second, "replica "+replica.Address+" failing with connection refused", func() bool {
				state, lastError := resilReplicaRow(t, gw, replica.Address)
				return state == "failing" && strings.Contains(lastError, "connection refused")
			})
		}

		var results [3]resilResult
		var wg sync.WaitGroup
		for i := range results {
			wg.Go(func() {
				results[i] = resilCall(t, testContext(t), client, example.FunctionEcho, ssetest.StringBundle("too late"))
			})
		}
		wg.Wait()

		for i, result := range results {
			st := status.Convert(result.err)
			if st.Code() != codes.Unavailable {
				t.Errorf("call %d = %v, want Unavailable", i, result.err)
				continue
			}
			if result.duration < reconnectBuffer {
				t.Errorf("call %d failed after %v, want after reconnect_buffer (%v)", i, result.duration, reconnectBuffer)
			}
			// Generous, for loaded test machines: only a call that hangs fails.
			if result.duration > reconnectBuffer+3*time.Second {
				t.Errorf("call %d failed after %v, want within 3s after reconnect_buffer (%v)", i, result.duration, reconnectBuffer)
			}
			wants := []string{"engine R", "waiting 2s", "reconnect_buffer", "connection refused"}
			for _, replica := range replicas {
				wants = append(wants, replica.Address+" failing")
			}
			for _, want := range wants {
				if !strings.Contains(st.Message(), want) {
					t.Errorf("call %d message = %q, want it to contain %q", i, st.Message(), want)
				}
			}
		}

		// The gateway's own record of each call's wait.
		var unavailable int
		for _, record := range callRecords(gw) {
			if record["code"] != "Unavailable" {
				continue
			}
			unavailable++
			nanoseconds, _ := record["duration"].(float64)
			if waited := time.Duration(nanoseconds); waited < reconnectBuffer || waited > reconnectBuffer+time.Second {
				t.Errorf("call record duration = %v, want reconnect_buffer (%v) to 1s more", waited, reconnectBuffer)
			}
		}
		if unavailable != len(results) {
			t.Errorf("gateway logged %d Unavailable calls, want %d", unavailable, len(results))
		}
		t.Logf("message: %s", status.Convert(results[0].err).Message())
	})
}

// resilMetric returns the value of the series of metric name whose labels
// include label (such as `qlik_sse_engine="R"`) in gw's /metrics, or -1
// when there is none.
func resilMetric(t *testing.T, gw *ssetest.Gateway, name, label string) float64 {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + gw.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET /metrics: reading the body: %v", err)
	}
	for line := range strings.SplitSeq(string(body), "\n") {
		if !strings.HasPrefix(line, name+"{") || !strings.Contains(line, label) {
			continue
		}
		fields := strings.Fields(line)
		value, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		return value
	}
	return -1
}

// TestNoReplicaMessageNamesReplicas checks what a call gets when no
// replica is reachable and the engine holds no call: the replicas and
// their states, and no balancer jargon.
func TestNoReplicaMessageNamesReplicas(t *testing.T) {
	address := ssetest.FreeAddress(t)
	engine := ssetest.FailFast(ssetest.Engine(address))
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", nil)},
		Engines:   map[string]*config.Engine{"R": engine},
	})
	_, client := ssetest.DialConn(t, gw.Addrs[0])
	// The replica was never reached, so its first failed probe is its only
	// change of state, and the probe logs it after setting the state.
	gw.Logs.WaitFor(t, "replica failing", 10*time.Second, func(record map[string]any) bool {
		return record["backend"] == address
	})

	result := resilCall(t, testContext(t), client, example.FunctionEcho, ssetest.StringBundle("nobody there"))
	st := status.Convert(result.err)
	if st.Code() != codes.Unavailable {
		t.Fatalf("call = %v, want Unavailable", result.err)
	}
	for _, want := range []string{"engine R", "no plugin reachable", address + " failing", "connection refused"} {
		if !strings.Contains(st.Message(), want) {
			t.Errorf("message = %q, want it to contain %q", st.Message(), want)
		}
	}
	if strings.Contains(st.Message(), "no children to pick from") {
		t.Errorf("message = %q, want it without gRPC's balancer wording", st.Message())
	}
}

// TestMaxWaitingRejectsAtOnce checks that while an engine is down, calls
// beyond max_waiting (3 here) fail at once with ResourceExhausted naming
// the limit, instead of waiting for reconnect_buffer, and that a waiting
// call that ends frees its place.
func TestMaxWaitingRejectsAtOnce(t *testing.T) {
	t.Parallel()
	const maxWaiting = 3
	engine := ssetest.ReconnectBuffer(ssetest.Engine(ssetest.FreeAddress(t)), 30*time.Second)
	engine.MaxWaiting = maxWaiting
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", nil)},
		Engines:   map[string]*config.Engine{"R": engine},
	})
	_, client := ssetest.DialConn(t, gw.Addrs[0])
	const waitingMetric, engineLabel = "ssegw_calls_waiting", `qlik_sse_engine="R"`

	// Fill the waiting places.
	waitCtx, cancelWaiting := context.WithCancel(testContext(t))
	defer cancelWaiting()
	waiting := make(chan error, maxWaiting)
	for range maxWaiting {
		go func() {
			waiting <- resilCall(t, waitCtx, client, example.FunctionEcho, ssetest.StringBundle("waits")).err
		}()
	}
	resilWait(t, 10*time.Second, "3 calls waiting", func() bool {
		return resilMetric(t, gw, waitingMetric, engineLabel) == maxWaiting
	})

	// Calls beyond the limit fail at once.
	for i := range 2 {
		result := resilCall(t, testContext(t), client, example.FunctionEcho, ssetest.StringBundle("one too many"))
		checkRejectedOverMaxWaiting(t, i, result.err, result.duration, maxWaiting)
	}

	// The waiting calls end when the client cancels them, and free their
	// places: the next call waits instead of failing.
	cancelWaiting()
	checkWaitingCallsCanceled(t, gw, waiting, maxWaiting, engineLabel)
	shortCtx, cancel := context.WithTimeout(testContext(t), 300*time.Millisecond)
	defer cancel()
	result := resilCall(t, shortCtx, client, example.FunctionEcho, ssetest.StringBundle("waits again"))
	if status.Code(result.err) != codes.DeadlineExceeded {
		t.Errorf("call after the waiting ones ended = %v, want DeadlineExceeded after waiting", result.err)
	}
	// No plugin was reached: the call's record says what the call waited
	// for, and why no replica was ready, not that a plugin did not answer.
	// The client reports its own deadline first.
	record := gw.Logs.WaitFor(t, "call", 5*time.Second, func(r map[string]any) bool { return r["code"] == "DeadlineExceeded" })
	message, _ := record["error"].(string)
	for _, want := range []string{"engine R", "waited for a ready replica", "connection refused"} {
		if !strings.Contains(message, want) {
			t.Errorf("message of a call whose deadline passed while it waited = %q, want it to contain %q", message, want)
		}
	}
}

// TestStopEndsWaitingCalls checks that a stop ends the calls that wait for
// a replica at once, with Unavailable saying so, instead of holding the
// stop until its drain time: they have reached no plugin. Shutdown then
// reports that every call ended by itself.
func TestStopEndsWaitingCalls(t *testing.T) {
	t.Parallel()
	engine := ssetest.ReconnectBuffer(ssetest.Engine(ssetest.FreeAddress(t)), time.Minute)
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", nil)},
		Engines:   map[string]*config.Engine{"R": engine},
	})
	_, client := ssetest.DialConn(t, gw.Addrs[0])
	checkStopEndsWait(t, gw, "R", func() error {
		return resilCall(t, testContext(t), client, example.FunctionEcho, ssetest.StringBundle("waits")).err
	})
}

// checkStopEndsWait makes call, waits until it waits on engine, stops the
// gateway, and checks that the stop ends without its drain time and the
// call with Unavailable saying that the gateway is stopping.
func checkStopEndsWait(t *testing.T, gw *ssetest.Gateway, engine string, call func() error) {
	t.Helper()
	waiting := make(chan error, 1)
	go func() { waiting <- call() }()
	resilWait(t, 10*time.Second, "a call waiting on engine "+engine, func() bool {
		return resilMetric(t, gw, "ssegw_calls_waiting", `qlik_sse_engine="`+engine+`"`) == 1
	})

	stopCtx, cancel := context.WithTimeout(testContext(t), 30*time.Second)
	defer cancel()
	if err := gw.Shutdown(stopCtx); err != nil {
		t.Errorf("Shutdown() = %v, want nil: the waiting call should end by itself", err)
	}
	err := <-waiting
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "the gateway is stopping") {
		t.Errorf("call waiting at the stop = %v, want Unavailable saying that the gateway is stopping", err)
	}
}

// TestMaxWaitingHealthyReplica checks that calls to a ready replica do
// not count among the waiting ones: with max_waiting at 2, 200 concurrent
// calls all end OK, whether the engine waits for replicas or fails fast.
func TestMaxWaitingHealthyReplica(t *testing.T) {
	for _, failFast := range []bool{false, true} {
		t.Run(fmt.Sprintf("fail fast %v", failFast), func(t *testing.T) {
			p := newPath(t, &ssetest.Connector{Execute: ssetest.Echo}, func(cfg *config.Config) {
				cfg.Engines["R"].MaxWaiting = 2
				if failFast {
					ssetest.FailFast(cfg.Engines["R"])
				}
			})
			ctx := testContext(t)
			// One call first, so that the replica's connection is ready.
			if out := exchange(functionContext(t, ctx, 1), p.viaGateway, ssetest.Raw{}); !errors.Is(out.err, io.EOF) {
				t.Fatalf("first call = %v, want OK", out.err)
			}
			const calls = 200
			failed := make(chan error, calls)
			var wg sync.WaitGroup
			for range calls {
				wg.Go(func() {
					if out := exchange(functionContext(t, ctx, 1), p.viaGateway, ssetest.Raw{}); !errors.Is(out.err, io.EOF) {
						failed <- out.err
					}
				})
			}
			wg.Wait()
			close(failed)
			for err := range failed {
				t.Errorf("call to a ready replica = %v, want OK", err)
			}
		})
	}
}

// checkRejectedOverMaxWaiting checks that extra call i, which ended with
// err after took, failed at once with ResourceExhausted naming
// max_waiting (maxWaiting).
func checkRejectedOverMaxWaiting(t *testing.T, i int, err error, took time.Duration, maxWaiting int) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted {
		t.Errorf("extra call %d = %v, want ResourceExhausted", i, err)
	}
	if want := fmt.Sprintf("max_waiting (%d)", maxWaiting); !strings.Contains(st.Message(), want) {
		t.Errorf("extra call %d message = %q, want it to contain %q", i, st.Message(), want)
	}
	if took > time.Second {
		t.Errorf("extra call %d failed after %v, want at once (under 1s)", i, took)
	}
}

// checkWaitingCallsCanceled reads the errors of the count waiting calls
// that the client has cancelled and checks that each is Canceled. It then
// waits until the ssegw_calls_waiting metric with engineLabel is 0 again.
func checkWaitingCallsCanceled(t *testing.T, gw *ssetest.Gateway, waiting <-chan error, count int, engineLabel string) {
	t.Helper()
	for range count {
		select {
		case err := <-waiting:
			if code := status.Code(err); code != codes.Canceled {
				t.Errorf("cancelled waiting call = %v, want Canceled", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a cancelled waiting call did not end within 10s")
		}
	}
	resilWait(t, 10*time.Second, "no call waiting at "+engineLabel, func() bool {
		return resilMetric(t, gw, "ssegw_calls_waiting", engineLabel) == 0
	})
}

// resilReplicaState returns the state of the replica at address as the
// gateway's status page shows it, or "" when the page does not list it.
func resilReplicaState(t *testing.T, gw *ssetest.Gateway, address string) string {
	t.Helper()
	state, _ := resilReplicaRow(t, gw, address)
	return state
}

// resilReplicaRow returns the state and the last error, as HTML text, of
// the replica at address on the gateway's status page, or "" and "" when
// the page does not list it.
func resilReplicaRow(t *testing.T, gw *ssetest.Gateway, address string) (state, lastError string) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + gw.AdminAddr().String() + "/")
	if err != nil {
		t.Fatalf("GET /: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET /: reading the body: %v", err)
	}
	row := regexp.MustCompile(`<code>` + regexp.QuoteMeta(address) + `</code></td><td class="[a-z]*">([a-z]+)</td><td>[^<]*</td><td>([^<]*)</td>`)
	if match := row.FindSubmatch(body); match != nil {
		return string(match[1]), string(match[2])
	}
	return "", ""
}

// TestRestartedReplicaDisagrees restarts a replica at once, as a
// supervisor does, with fewer functions than the engine's. From its
// restart on it must get no call, and the other replica serves them all.
// The gateway warns once, naming the differing function id, and the status
// page shows the replica "disagreeing".
func TestRestartedReplicaDisagrees(t *testing.T) {
	t.Parallel() // about 3s: a process restart and probes
	steady := ssetest.StartRestartablePlugin(t, "steady")
	changed := ssetest.StartRestartablePlugin(t, "changed")
	engine := ssetest.Engine(steady.Address, changed.Address)
	engine.ProbeInterval = time.Second
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", nil)},
		Engines:   map[string]*config.Engine{"R": engine},
	})
	_, client := ssetest.DialConn(t, gw.Addrs[0])
	ctx := testContext(t)
	waitServedByAll(t, ctx, client, steady.Name, changed.Name)
	gw.Logs.WaitFor(t, "capabilities agreed", 10*time.Second, nil)

	// Restart one replica without SumOfColumn, whose function id is 2.
	changed.Kill(t)
	changed.Restart(t, "--functions", "Echo,SumOfRows")

	// Call until the status page shows the replica disagreeing, then 20
	// times more. The calls made while waiting are part of the check, so
	// the loop polls instead of waiting on the replica's record.
	before, after := map[string]int{}, map[string]int{}
	deadline := time.Now().Add(10 * time.Second)
	for resilReplicaState(t, gw, changed.Address) != "disagreeing" {
		if time.Now().After(deadline) {
			t.Fatalf("status page state of the restarted replica = %q after 10s, want disagreeing",
				resilReplicaState(t, gw, changed.Address))
		}
		before[resilEcho(t, ctx, client).replica]++
	}
	for range 20 {
		after[resilEcho(t, ctx, client).replica]++
	}
	if before[changed.Name] != 0 {
		t.Errorf("the restarted replica with other functions served %d of %d calls before the gateway marked it disagreeing, want 0",
			before[changed.Name], before[changed.Name]+before[steady.Name])
	}
	if after[changed.Name] != 0 {
		t.Errorf("the disagreeing replica served %d of 20 calls, want 0", after[changed.Name])
	}
	if got := resilReplicaState(t, gw, steady.Address); got != "healthy" {
		t.Errorf("status page state of the other replica = %q, want healthy", got)
	}

	var warnings []map[string]any
	for _, record := range gw.Logs.Records("") {
		if record["level"] == "WARN" && strings.Contains(fmt.Sprint(record["msg"]), "functions differ") {
			warnings = append(warnings, record)
		}
	}
	if len(warnings) != 1 {
		t.Fatalf("got %d warnings about differing functions, want 1: %v", len(warnings), warnings)
	}
	if got := warnings[0]["backend"]; got != changed.Address {
		t.Errorf("warning backend = %v, want %s", got, changed.Address)
	}
	if got, want := fmt.Sprint(warnings[0]["function_ids"]), "[2]"; got != want {
		t.Errorf("warning function_ids = %s, want %s", got, want)
	}
	t.Logf("calls served from the restart until the gateway noticed: %v; after: %v", before, after)
}

// TestStateDirAnswersWhileDown starts a gateway while every plugin is
// down, with the state_dir of an earlier gateway. It must return the
// stored capabilities to GetCapabilities at once, so that a Qlik engine
// starting during the outage still learns its functions. Calls succeed
// once the plugin starts.
func TestStateDirAnswersWhileDown(t *testing.T) {
	t.Parallel() // about 2s: plugin processes and two gateways
	plugin := ssetest.StartRestartablePlugin(t, "stored")
	stateDir := t.TempDir()
	gatewayConfig := func() *config.Config {
		return &config.Config{
			Listeners: []config.Listener{ssetest.Listen("R", nil)},
			Engines:   map[string]*config.Engine{"R": ssetest.Engine(plugin.Address)},
			StateDir:  stateDir,
		}
	}
	ctx := testContext(t)

	// The first gateway learns and stores the capabilities, then stops.
	first := ssetest.StartGateway(t, gatewayConfig())
	first.Logs.WaitFor(t, "capabilities agreed", 10*time.Second, nil)
	_, firstClient := ssetest.DialConn(t, first.Addrs[0])
	want, err := firstClient.GetCapabilities(ctx, &ssepb.Empty{})
	if err != nil {
		t.Fatalf("GetCapabilities through the first gateway = %v, want OK", err)
	}
	if _, err := os.Stat(filepath.Join(stateDir, "capabilities-R.json")); err != nil {
		t.Fatalf("stored capabilities: %v", err)
	}
	stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	first.Shutdown(stopCtx)
	plugin.Kill(t)

	// A new gateway with the same state_dir returns the stored capabilities.
	second := ssetest.StartGateway(t, gatewayConfig())
	_, client := ssetest.DialConn(t, second.Addrs[0])
	capabilitiesCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	start := time.Now()
	got, err := client.GetCapabilities(capabilitiesCtx, &ssepb.Empty{})
	if err != nil {
		t.Fatalf("GetCapabilities with the plugin down = %v, want the stored capabilities", err)
	}
	// Far below reconnect_buffer (20s), which a call to the plugin would wait.
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("GetCapabilities with the plugin down took %v, want at once (under 2s)", elapsed)
	}
	if !proto.Equal(got, want) {
		t.Errorf("GetCapabilities with the plugin down = %v, want %v", got, want)
	}
	second.Logs.WaitFor(t, "capabilities loaded from the state folder", time.Second, nil)

	// A call made while the plugin is down waits for it, and succeeds once
	// it starts.
	waiting := make(chan resilResult, 1)
	go func() {
		waiting <- resilCall(t, ctx, client, example.FunctionEcho, ssetest.StringBundle("waits for the plugin"))
	}()
	resilWait(t, 10*time.Second, "a call waiting for the plugin", func() bool {
		return resilMetric(t, second, "ssegw_calls_waiting", `qlik_sse_engine="R"`) == 1
	})
	plugin.Restart(t)
	select {
	case result := <-waiting:
		if result.err != nil {
			t.Errorf("call made while the plugin was down = %v, want OK", result.err)
		}
		if result.replica != plugin.Name {
			t.Errorf("call made while the plugin was down served by %q, want %q", result.replica, plugin.Name)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("call made while the plugin was down did not end within 15s of its start")
	}
	if result := resilEcho(t, ctx, client); result.replica != plugin.Name {
		t.Errorf("call after the plugin started served by %q, want %q", result.replica, plugin.Name)
	}
}

// TestStateDirStoresForwardedCapabilities has a client's GetCapabilities
// pass through the gateway before the first probe is answered, as Qlik's
// can while the gateway starts. The probe that then agrees with that
// answer must store it and log "capabilities agreed", so that a gateway
// restarted while the plugin is down answers from the state folder. Before,
// the probe saw no change, and the state folder stayed empty.
func TestStateDirStoresForwardedCapabilities(t *testing.T) {
	t.Parallel()
	want := &ssepb.Capabilities{PluginIdentifier: "forwarded", Functions: []*ssepb.FunctionDefinition{{FunctionId: 0, Name: "Echo"}}}
	forwarded := make(chan struct{})
	plugin := ssetest.StartPlugin(t, &ssetest.Connector{
		Capabilities: func(ctx context.Context, _ *ssepb.Empty) (*ssepb.Capabilities, error) {
			if ssetest.IsProbe(ctx) {
				select {
				case <-forwarded:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			return want, nil
		},
	})
	stateDir := t.TempDir()
	gatewayConfig := func() *config.Config {
		return &config.Config{
			Listeners: []config.Listener{ssetest.Listen("R", nil)},
			Engines:   map[string]*config.Engine{"R": ssetest.Engine(plugin.Addr)},
			StateDir:  stateDir,
		}
	}
	ctx := testContext(t)

	// The client's answer passes through while the probe waits.
	first := ssetest.StartGateway(t, gatewayConfig())
	_, firstClient := ssetest.DialConn(t, first.Addrs[0])
	if _, err := firstClient.GetCapabilities(ctx, &ssepb.Empty{}); err != nil {
		t.Fatalf("GetCapabilities through the first gateway = %v, want OK", err)
	}
	close(forwarded)
	first.Logs.WaitFor(t, "capabilities agreed", 10*time.Second, nil)
	if _, err := os.Stat(filepath.Join(stateDir, "capabilities-R.json")); err != nil {
		t.Fatalf("stored capabilities: %v", err)
	}
	stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	first.Shutdown(stopCtx)
	plugin.Server.Stop()

	// A new gateway with the plugin down answers from the state folder.
	second := ssetest.StartGateway(t, gatewayConfig())
	_, client := ssetest.DialConn(t, second.Addrs[0])
	capabilitiesCtx, cancel := context.WithTimeout(ctx, 5*time.Second) // reconnect_buffer is 20s
	defer cancel()
	got, err := client.GetCapabilities(capabilitiesCtx, &ssepb.Empty{})
	if err != nil {
		t.Fatalf("GetCapabilities with the plugin down = %v, want the stored capabilities", err)
	}
	if !proto.Equal(got, want) {
		t.Errorf("GetCapabilities with the plugin down = %v, want %v", got, want)
	}
}

// TestBalancerWithSlowReplica checks how the balancers share 200 calls,
// made by 8 concurrent clients, between a fast replica and one that takes
// 50ms per bundle. least_request, the default, sends most calls to the
// fast replica, since the slow one has calls in flight longer: it gets
// one only while it has no more open than the fast one, 2 to 14% of the
// calls in test runs (the more, the slower the machine). The bound of 40%
// still fails round_robin's even split. routing's
// TestLeastRequestAvoidsBusyReplica checks the picks themselves.
// round_robin alternates whatever the load, so it splits them evenly.
func TestBalancerWithSlowReplica(t *testing.T) {
	t.Parallel() // about 4s: plugin processes and the slow replica's calls
	const calls, workers = 200, 8
	tests := []struct {
		name     string
		balancer string
		// check reports what is wrong with the calls served by each.
		check func(fast, slow int) string
	}{
		{
			name:     "least_request",
			balancer: config.BalancerLeastRequest,
			check: func(fast, slow int) string {
				if slow*10 > calls*4 {
					return fmt.Sprintf("slow replica served %d of %d calls, want at most 40%%", slow, calls)
				}
				return ""
			},
		},
		{
			name:     "round_robin",
			balancer: config.BalancerRoundRobin,
			check: func(fast, slow int) string {
				// One new picker during the run may shift the order by one.
				if fast < calls/2-2 || fast > calls/2+2 {
					return fmt.Sprintf("fast replica served %d of %d calls, want %d ± 2", fast, calls, calls/2)
				}
				return ""
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fast := ssetest.StartRestartablePlugin(t, "fast")
			slow := ssetest.StartRestartablePlugin(t, "slow", "--delay", "50ms")
			engine := ssetest.Engine(fast.Address, slow.Address)
			engine.Balancer = tt.balancer
			gw := ssetest.StartGateway(t, &config.Config{
				Listeners: []config.Listener{ssetest.Listen("R", nil)},
				Engines:   map[string]*config.Engine{"R": engine},
			})
			_, client := ssetest.DialConn(t, gw.Addrs[0])
			ctx := testContext(t)
			waitServedByAll(t, ctx, client, fast.Name, slow.Name)

			var served sync.Map // replica name to *atomic.Int64
			for _, name := range []string{fast.Name, slow.Name} {
				served.Store(name, &atomic.Int64{})
			}
			var next atomic.Int64
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for next.Add(1) <= calls {
						result := resilCall(t, ctx, client, example.FunctionEcho, ssetest.StringBundle("which replica?"))
						if result.err != nil {
							t.Errorf("call = %v, want OK", result.err)
							continue
						}
						counter, ok := served.Load(result.replica)
						if !ok {
							t.Errorf("call served by %q, want fast or slow", result.replica)
							continue
						}
						counter.(*atomic.Int64).Add(1)
					}
				})
			}
			wg.Wait()

			count := func(name string) int {
				counter, _ := served.Load(name)
				return int(counter.(*atomic.Int64).Load())
			}
			fastCalls, slowCalls := count(fast.Name), count(slow.Name)
			if fastCalls+slowCalls != calls {
				t.Errorf("replicas served %d calls, want %d", fastCalls+slowCalls, calls)
			}
			if problem := tt.check(fastCalls, slowCalls); problem != "" {
				t.Error(problem)
			}
			t.Logf("%s: fast replica served %d calls, slow replica %d", tt.balancer, fastCalls, slowCalls)
		})
	}
}

// concurrencyPlugin is a test plugin that counts the ExecuteFunction calls
// open on it at once. Each call reads the request, holds for hold, and
// sends one empty reply.
type concurrencyPlugin struct {
	*ssetest.Plugin
	open, peak, served atomic.Int64
}

func startConcurrencyPlugin(t *testing.T, hold time.Duration) *concurrencyPlugin {
	t.Helper()
	p := &concurrencyPlugin{}
	p.Plugin = ssetest.StartPlugin(t, &ssetest.Connector{
		Execute: func(s ssetest.Stream) error {
			open := p.open.Add(1)
			defer p.open.Add(-1)
			for {
				peak := p.peak.Load()
				if open <= peak || p.peak.CompareAndSwap(peak, open) {
					break
				}
			}
			for {
				if _, err := s.Recv(); errors.Is(err, io.EOF) {
					break
				} else if err != nil {
					return err
				}
			}
			select {
			case <-time.After(hold): // the plugin's work
			case <-s.Context().Done():
				return s.Context().Err()
			}
			p.served.Add(1)
			return s.Send(&ssepb.BundledRows{})
		},
	})
	return p
}

// TestMaxInFlightPerReplica makes 20 concurrent calls over two replicas
// with max_in_flight 1. The plugins count the calls open on them, and
// neither may ever have more than one. The calls beyond the limit wait for
// a free replica instead of failing.
func TestMaxInFlightPerReplica(t *testing.T) {
	t.Parallel()
	const calls, hold = 20, 20 * time.Millisecond
	plugins := []*concurrencyPlugin{startConcurrencyPlugin(t, hold), startConcurrencyPlugin(t, hold)}
	engine := ssetest.Engine(plugins[0].Addr, plugins[1].Addr)
	engine.MaxInFlight = 1
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", nil)},
		Engines:   map[string]*config.Engine{"R": engine},
	})
	_, client := ssetest.DialConn(t, gw.Addrs[0])
	ctx := testContext(t)

	start := time.Now()
	errs := make([]error, calls)
	var wg sync.WaitGroup
	for i := range calls {
		wg.Go(func() {
			errs[i] = resilCall(t, ctx, client, example.FunctionEcho, ssetest.StringBundle("one at a time")).err
		})
	}
	wg.Wait()
	elapsed := time.Since(start)

	for i, err := range errs {
		if err != nil {
			t.Errorf("call %d = %v, want OK", i, err)
		}
	}
	var total int64
	for i, plugin := range plugins {
		if peak := plugin.peak.Load(); peak != 1 {
			t.Errorf("replica %d had %d calls open at once, want 1", i, peak)
		}
		if plugin.served.Load() == 0 {
			t.Errorf("replica %d served no call, want both to serve", i)
		}
		total += plugin.served.Load()
	}
	if total != calls {
		t.Errorf("replicas served %d calls, want %d", total, calls)
	}
	// One call at a time per replica takes at least calls/2 holds.
	if minimum := calls / 2 * hold; elapsed < minimum {
		t.Errorf("%d calls took %v, want at least %v with one call at a time per replica", calls, elapsed, minimum)
	}
	t.Logf("replicas served %d and %d calls in %v", plugins[0].served.Load(), plugins[1].served.Load(), elapsed)
}

// TestMaxInFlightWithoutWait checks that with reconnect_buffer 0 a call
// that finds its only replica at max_in_flight fails at once with
// Unavailable naming the limit, while the first call is still open.
func TestMaxInFlightWithoutWait(t *testing.T) {
	t.Parallel()
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	plugin := ssetest.StartPlugin(t, &ssetest.Connector{
		Execute: func(s ssetest.Stream) error {
			arrived <- struct{}{}
			select {
			case <-release:
				return nil
			case <-s.Context().Done():
				return s.Context().Err()
			}
		},
	})
	engine := ssetest.FailFast(ssetest.Engine(plugin.Addr))
	engine.MaxInFlight = 1
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", nil)},
		Engines:   map[string]*config.Engine{"R": engine},
	})
	_, client := ssetest.DialConn(t, gw.Addrs[0])
	ctx := testContext(t)

	// Without reconnect_buffer the first call still waits while the
	// gateway's connection to the plugin is being made.
	first := make(chan resilResult, 1)
	go func() { first <- resilCall(t, ctx, client, example.FunctionEcho, ssetest.StringBundle("first")) }()
	select {
	case <-arrived:
	case <-ctx.Done():
		t.Fatal("the first call did not reach the plugin")
	}

	second := resilCall(t, ctx, client, example.FunctionEcho, ssetest.StringBundle("second"))
	st := status.Convert(second.err)
	if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "max_in_flight (1)") {
		t.Errorf("call while the only replica is full = %v, want Unavailable naming max_in_flight (1)", second.err)
	}
	close(release)
	if result := <-first; result.err != nil {
		t.Errorf("first call = %v, want OK", result.err)
	}
}

// TestFunctionRequestTimeout checks that a request_timeout set for one
// function cuts the calls of that function only. The plugin takes 1.5s to
// reply. SumOfColumn, limited to 1s, fails with DeadlineExceeded after
// 1s. Echo, under the engine's policy without a limit, succeeds.
func TestFunctionRequestTimeout(t *testing.T) {
	t.Parallel() // about 3s: the plugin replies after 1.5s
	const limit = time.Second
	plugin := ssetest.StartRestartablePlugin(t, "slow", "--delay", "1500ms")
	engine := ssetest.Engine(plugin.Address)
	timeout := limit
	engine.Functions = map[string]*config.FunctionPolicy{"SumOfColumn": {RequestTimeout: &timeout}}
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", nil)},
		Engines:   map[string]*config.Engine{"R": engine},
	})
	// The policy applies by function name, from the capabilities.
	gw.Logs.WaitFor(t, "capabilities agreed", 10*time.Second, nil)
	_, client := ssetest.DialConn(t, gw.Addrs[0])
	ctx := testContext(t)

	var limited, unlimited resilResult
	var wg sync.WaitGroup
	wg.Go(func() {
		limited = resilCall(t, ctx, client, example.FunctionSumOfColumn, ssetest.NumericBundle(3, 1))
	})
	wg.Go(func() {
		unlimited = resilCall(t, ctx, client, example.FunctionEcho, ssetest.StringBundle("no limit"))
	})
	wg.Wait()

	// The plugin receives the deadline too, and may end the call with its
	// own DeadlineExceeded first, so the message is not checked.
	if code := status.Code(limited.err); code != codes.DeadlineExceeded {
		t.Errorf("SumOfColumn call = %v, want DeadlineExceeded", limited.err)
	}
	if limited.duration < limit {
		t.Errorf("SumOfColumn call failed after %v, want after %v", limited.duration, limit)
	}
	// The plugin would reply after 1.5s, so the gateway must end the call
	// before then, by its own clock.
	record := gw.Logs.WaitFor(t, "call", 5*time.Second, func(record map[string]any) bool {
		return record["function"] == "SumOfColumn"
	})
	nanoseconds, _ := record["duration"].(float64)
	if cut := time.Duration(nanoseconds); cut < limit || cut >= 1500*time.Millisecond {
		t.Errorf("SumOfColumn call record duration = %v, want from %v to 1.5s", cut, limit)
	}
	if got := record["code"]; got != "DeadlineExceeded" {
		t.Errorf("SumOfColumn call record code = %v, want DeadlineExceeded", got)
	}
	if unlimited.err != nil {
		t.Errorf("Echo call = %v, want OK after the plugin's 1.5s", unlimited.err)
	}
	if unlimited.duration < 1500*time.Millisecond {
		t.Errorf("Echo call took %v, want at least the plugin's 1.5s", unlimited.duration)
	}
}

// droppingPlugin is a test plugin with the example plugin's functions.
// For as many calls as it is armed for, it reads the request and then
// resets every connection to it, as a plugin that crashes before it
// replies. Calls it is set to reject then fail at once, unread. Other
// calls get their bundles echoed.
type droppingPlugin struct {
	addr   string
	armed  atomic.Int64 // calls left to fail
	reject atomic.Int64 // calls left to reject, once none is armed
	calls  atomic.Int64 // ExecuteFunction calls received

	// readFirst, when above 0, is how many bundles an armed call reads
	// before it drops. At 0 it reads the whole request.
	readFirst atomic.Int64
	// holdAfterDrop, when set, keeps the connections that arrive after a
	// drop from being served until it is closed, so the gateway's new
	// connections stay unready and its calls wait.
	holdAfterDrop atomic.Pointer[chan struct{}]
	dropped       atomic.Bool

	mu    sync.Mutex // guards conns
	conns []net.Conn
}

// droppingListener records the connections it accepts for droppingPlugin.
type droppingListener struct {
	net.Listener
	plugin *droppingPlugin
}

func (l droppingListener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if hold := l.plugin.holdAfterDrop.Load(); hold != nil && l.plugin.dropped.Load() {
		<-*hold
	}
	if err == nil {
		l.plugin.mu.Lock()
		l.plugin.conns = append(l.plugin.conns, conn)
		l.plugin.mu.Unlock()
	}
	return conn, err
}

// dropAll resets every connection accepted so far.
func (p *droppingPlugin) dropAll() {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	resetConns(conns)
}

// resetConns closes each connection with a TCP reset, as a plugin that
// crashes does, rather than with an orderly close.
func resetConns(conns []net.Conn) {
	for _, conn := range conns {
		if tcp, ok := conn.(*net.TCPConn); ok {
			tcp.SetLinger(0)
		}
		conn.Close()
	}
}

func startDroppingPlugin(t *testing.T) *droppingPlugin {
	t.Helper()
	p := &droppingPlugin{}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = lis.Addr().String()
	server := grpc.NewServer(grpc.ForceServerCodecV2(ssetest.Codec{}))
	ssepb.RegisterConnectorServer(server, &ssetest.Connector{
		Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
			return example.NewServer("dropping").Capabilities(), nil
		},
		Execute: func(s ssetest.Stream) error {
			p.calls.Add(1)
			if p.armed.Load() <= 0 && p.reject.Add(-1) >= 0 {
				return status.Error(codes.FailedPrecondition, "rejected unread")
			}
			var request []*ssepb.BundledRows
			armed, readFirst := p.armed.Load() > 0, int(p.readFirst.Load())
			for !armed || readFirst == 0 || len(request) < readFirst {
				bundle, err := s.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					return err
				}
				request = append(request, bundle)
			}
			if p.armed.Add(-1) >= 0 {
				p.dropped.Store(true)
				p.dropAll()
				<-s.Context().Done()
				return s.Context().Err()
			}
			for _, bundle := range request {
				if err := s.Send(bundle); err != nil {
					return err
				}
			}
			return nil
		},
	})
	go server.Serve(droppingListener{Listener: lis, plugin: p})
	t.Cleanup(server.Stop)
	return p
}

// TestReplayPolicy checks when a call whose replica fails before it
// replies is sent again. By default it is, and succeeds. With replay false
// for the engine or for the function, or with a request larger than
// replay_buffer, it is not, and fails with Unavailable. The plugin resets
// its connections after it has read the request, without a reply.
func TestReplayPolicy(t *testing.T) {
	t.Parallel()
	off := false
	small := ssetest.StringBundle("small")
	large := ssetest.StringBundle(strings.Repeat("x", 700), strings.Repeat("y", 700))
	tests := []struct {
		name         string
		tune         func(*config.Engine)
		function     int32
		request      []*ssepb.BundledRows
		wantCode     codes.Code
		wantAttempts int
	}{
		{name: "default", function: example.FunctionEcho, request: []*ssepb.BundledRows{small, small},
			wantCode: codes.OK, wantAttempts: 2},
		{name: "engine replay false", function: example.FunctionEcho, request: []*ssepb.BundledRows{small},
			tune:     func(e *config.Engine) { e.Replay = &off },
			wantCode: codes.Unavailable, wantAttempts: 1},
		{name: "function replay false", function: example.FunctionEcho, request: []*ssepb.BundledRows{small},
			tune:     func(e *config.Engine) { e.Functions = map[string]*config.FunctionPolicy{"Echo": {Replay: &off}} },
			wantCode: codes.Unavailable, wantAttempts: 1},
		{name: "other function than replay false", function: example.FunctionSumOfRows, request: []*ssepb.BundledRows{ssetest.NumericBundle(2, 2)},
			tune:     func(e *config.Engine) { e.Functions = map[string]*config.FunctionPolicy{"Echo": {Replay: &off}} },
			wantCode: codes.OK, wantAttempts: 2},
		{name: "request within replay_buffer", function: example.FunctionEcho, request: []*ssepb.BundledRows{small, small},
			tune:     func(e *config.Engine) { e.ReplayBuffer = 1024 },
			wantCode: codes.OK, wantAttempts: 2},
		{name: "request over replay_buffer", function: example.FunctionEcho, request: []*ssepb.BundledRows{large},
			tune:     func(e *config.Engine) { e.ReplayBuffer = 1024 },
			wantCode: codes.Unavailable, wantAttempts: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			plugin := startDroppingPlugin(t)
			engine := ssetest.Engine(plugin.addr)
			if tt.tune != nil {
				tt.tune(engine)
			}
			gw := ssetest.StartGateway(t, &config.Config{
				Listeners: []config.Listener{ssetest.Listen("R", nil)},
				Engines:   map[string]*config.Engine{"R": engine},
			})
			gw.Logs.WaitFor(t, "capabilities agreed", 10*time.Second, nil)
			_, client := ssetest.DialConn(t, gw.Addrs[0])

			plugin.armed.Store(1)
			result := resilCall(t, testContext(t), client, tt.function, tt.request...)

			if code := status.Code(result.err); code != tt.wantCode {
				t.Errorf("call = %v, want %v", result.err, tt.wantCode)
			}
			if got := plugin.calls.Load(); got != int64(tt.wantAttempts) {
				t.Errorf("plugin received %d calls, want %d", got, tt.wantAttempts)
			}
			record := gw.Logs.WaitFor(t, "call", 5*time.Second, func(record map[string]any) bool {
				return record["method"] == "/qlik.sse.Connector/ExecuteFunction"
			})
			if got := attempts(record); got != tt.wantAttempts {
				t.Errorf("call record attempts = %d, want %d", got, tt.wantAttempts)
			}
			if tt.wantCode == codes.OK && len(result.replies) != len(tt.request) {
				t.Errorf("replayed call got %d reply bundles, want %d", len(result.replies), len(tt.request))
			}
		})
	}
}

// TestReplayEndsWhileSending checks that a replay that the replica rejects
// unread, while the gateway still sends it more than a flow-control window
// of kept messages, ends with the replica's own status. The messages are
// large enough for gRPC's buffer pool, so the 3 rounds reuse its buffers,
// and a call after them must still succeed.
func TestReplayEndsWhileSending(t *testing.T) {
	t.Parallel()
	plugin := startDroppingPlugin(t)
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", nil)},
		Engines:   map[string]*config.Engine{"R": ssetest.Engine(plugin.addr)},
	})
	gw.Logs.WaitFor(t, "capabilities agreed", 10*time.Second, nil)
	_, client := ssetest.DialConn(t, gw.Addrs[0])

	// 400 kB: over the 128 KiB window, under replay_buffer.
	request := slices.Repeat([]*ssepb.BundledRows{ssetest.StringBundle(strings.Repeat("x", 20000))}, 20)
	for round := range 3 {
		plugin.armed.Store(1)
		plugin.reject.Store(1)
		result := resilCall(t, testContext(t), client, example.FunctionEcho, request...)
		if st := status.Convert(result.err); st.Code() != codes.FailedPrecondition || st.Message() != "rejected unread" {
			t.Fatalf("round %d: call = %v, want the replica's FailedPrecondition", round, result.err)
		}
	}
	result := resilCall(t, testContext(t), client, example.FunctionEcho, request...)
	if result.err != nil || len(result.replies) != len(request) {
		t.Errorf("call after the rejected replays = %v with %d reply bundles, want %d", result.err, len(result.replies), len(request))
	}
}

// TestReplayLogOutgrownWhileWaiting checks that a call whose first attempt
// fails after one bundle, and which sends more than replay_buffer while
// the replica is unready, fails with Unavailable. The kept messages no
// longer contain the whole request, so a replay would pass on only its
// tail. It fails while the replica is still unready (the test releases it
// only at its end): it waited for the replica before, up to
// reconnect_buffer, and opened a call there only to abandon it.
func TestReplayLogOutgrownWhileWaiting(t *testing.T) {
	t.Parallel()
	plugin := startDroppingPlugin(t)
	engine := ssetest.Engine(plugin.addr)
	engine.ReplayBuffer = 64 << 10
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", nil)},
		Engines:   map[string]*config.Engine{"R": engine},
	})
	gw.Logs.WaitFor(t, "capabilities agreed", 10*time.Second, nil)
	_, client := ssetest.DialConn(t, gw.Addrs[0])

	hold := make(chan struct{})
	release := sync.OnceFunc(func() { close(hold) })
	t.Cleanup(release) // before the plugin's server stops
	plugin.holdAfterDrop.Store(&hold)
	plugin.readFirst.Store(1)
	plugin.armed.Store(1)

	md, err := ssepb.FunctionCallMetadata(example.FunctionEcho, &ssepb.CommonRequestHeader{AppId: "app", UserId: "user", Cardinality: 1})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := client.ExecuteFunction(metadata.NewOutgoingContext(testContext(t), md))
	if err != nil {
		t.Fatal(err)
	}
	bundle := ssetest.StringBundle(strings.Repeat("x", 50000))
	if err := stream.Send(bundle); err != nil {
		t.Fatal(err)
	}
	gw.Logs.WaitFor(t, "replaying call", 10*time.Second, nil)
	// 500 kB more: over replay_buffer, and over what the call's windows
	// let the client send ahead of the gateway, so that the gateway has
	// read past replay_buffer by the time the sends return.
	// The call may end before the last sends, once the gateway has read
	// past replay_buffer; a send then ends with io.EOF.
	for range 10 {
		if err := stream.Send(bundle); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("sending while the gateway waits for a replica: %v", err)
		}
	}
	stream.CloseSend()

	replies := 0
	for {
		if _, err = stream.Recv(); err != nil {
			break
		}
		replies++
	}
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "outgrew replay_buffer") {
		t.Errorf("call = %v after %d reply bundles, want Unavailable naming replay_buffer", err, replies)
	}
}

// TestReplayWaitsWhatIsLeft checks that reconnect_buffer bounds the waits
// of all of a call's attempts together. The call waits for the plugin's
// connection for about half of the buffer, reaches it, and loses it before
// any reply; its replay then waits only for the rest. Each replay once
// waited a whole buffer, so a call could be held max_attempts times as
// long as reconnect_buffer says.
func TestReplayWaitsWhatIsLeft(t *testing.T) {
	t.Parallel()
	const buffer = 2 * time.Second
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lis := &gatedListener{Listener: inner, gate: make(chan struct{}), stopped: make(chan struct{})}
	var calls atomic.Int32
	server := grpc.NewServer(grpc.ForceServerCodecV2(ssetest.Codec{}))
	ssepb.RegisterConnectorServer(server, &ssetest.Connector{
		Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
			return example.NewServer("gated").Capabilities(), nil
		},
		Execute: func(s ssetest.Stream) error {
			if calls.Add(1) == 1 {
				lis.shut()
				lis.resetAll()
			}
			<-s.Context().Done()
			return s.Context().Err()
		},
	})
	go server.Serve(lis)
	t.Cleanup(server.Stop)
	t.Cleanup(lis.stop) // first, so that the server's Accept returns

	engine := ssetest.ReconnectBuffer(ssetest.Engine(inner.Addr().String()), buffer)
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", nil)},
		Engines:   map[string]*config.Engine{"R": engine},
	})
	_, client := ssetest.DialConn(t, gw.Addrs[0])

	result := make(chan resilResult, 1)
	go func() {
		result <- resilCall(t, testContext(t), client, example.FunctionEcho, ssetest.StringBundle("held"))
	}()
	resilWait(t, 10*time.Second, "the call waiting", func() bool {
		return resilMetric(t, gw, "ssegw_calls_waiting", `qlik_sse_engine="R"`) == 1
	})
	// The scenario, not a synchronisation: the call spends half of its
	// buffer waiting before the plugin accepts the gateway's connections.
	time.Sleep(buffer / 2)
	lis.open()

	r := <-result
	t.Logf("call ended with %v after %v", r.err, r.duration)
	if st := status.Convert(r.err); st.Code() != codes.Unavailable {
		t.Fatalf("call = %v, want Unavailable once reconnect_buffer is spent", r.err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("the plugin got %d calls, want 1: the replay found no replica", n)
	}
	// The replay waited what was left. A whole buffer more would make it
	// one and a half buffers; the margin allows for timers on a slow
	// machine.
	if limit := buffer + buffer/4; r.duration > limit {
		t.Errorf("the call took %v, want at most %v: reconnect_buffer is %v for all its attempts", r.duration, limit, buffer)
	}
	record := gw.Logs.WaitFor(t, "call", 10*time.Second, nil)
	if record["attempts"] != float64(2) {
		t.Errorf("access record attempts = %v, want 2", record["attempts"])
	}
}

// gatedListener hands accepted connections to a plugin's server only while
// its gate is open, so that a test decides when the gateway's connections
// to the plugin come up. It can reset the connections handed on so far.
type gatedListener struct {
	net.Listener
	stopped chan struct{} // closed by stop, which opens the gate for good

	mu    sync.Mutex
	gate  chan struct{} // closed while open
	conns []net.Conn
}

func (l *gatedListener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	gate := l.gate
	l.mu.Unlock()
	select {
	case <-gate:
	case <-l.stopped:
	}
	l.mu.Lock()
	l.conns = append(l.conns, conn)
	l.mu.Unlock()
	return conn, nil
}

func (l *gatedListener) open() {
	l.mu.Lock()
	defer l.mu.Unlock()
	close(l.gate)
}

// shut closes the gate that open opened.
func (l *gatedListener) shut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.gate = make(chan struct{})
}

func (l *gatedListener) stop() { close(l.stopped) }

func (l *gatedListener) resetAll() {
	l.mu.Lock()
	conns := l.conns
	l.conns = nil
	l.mu.Unlock()
	resetConns(conns)
}

// TestStaleFunctionIDForwarded makes calls of a function id that the
// plugin's capabilities do not list, as a Qlik engine that learnt an older
// function list does. The gateway forwards them with their header
// unchanged. It warns once per client host within the rate limit, naming
// the client's address and its certificate's common name.
func TestStaleFunctionIDForwarded(t *testing.T) {
	t.Parallel()
	const staleID, calls = 7, 5
	headers := make(chan []string, calls)
	plugin := ssetest.StartPlugin(t, &ssetest.Connector{
		Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
			return &ssepb.Capabilities{PluginIdentifier: "current", Functions: []*ssepb.FunctionDefinition{{FunctionId: 0, Name: "Known"}}}, nil
		},
		Execute: func(s ssetest.Stream) error {
			md, _ := metadata.FromIncomingContext(s.Context())
			headers <- md.Get(ssepb.FunctionRequestHeaderKey)
			for {
				if _, err := s.Recv(); errors.Is(err, io.EOF) {
					return s.Send(&ssepb.BundledRows{})
				} else if err != nil {
					return err
				}
			}
		},
	})
	certs := ssetest.NewCerts(t)
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", &config.ServerTLS{Dir: certs.GatewayDir})},
		Engines:   map[string]*config.Engine{"R": ssetest.Engine(plugin.Addr)},
	})
	gw.Logs.WaitFor(t, "capabilities agreed", 10*time.Second, nil)
	dialer := &connRecorder{}
	client := ssetest.DialTLS(t, gw.Addrs[0], certs.QlikDir, "", grpc.WithContextDialer(dialer.dial))

	sent, err := ssepb.FunctionCallMetadata(staleID, &ssepb.CommonRequestHeader{AppId: "app", UserId: "user", Cardinality: 1})
	if err != nil {
		t.Fatal(err)
	}
	for i := range calls {
		result := resilCall(t, testContext(t), client, staleID, ssetest.StringBundle("stale"))
		if result.err != nil {
			t.Fatalf("call %d of function id %d = %v, want OK from the plugin", i, staleID, result.err)
		}
		select {
		case got := <-headers:
			if want := sent.Get(ssepb.FunctionRequestHeaderKey); !slices.Equal(got, want) {
				t.Errorf("call %d: plugin got %s %q, want %q", i, ssepb.FunctionRequestHeaderKey, got, want)
			}
		default:
			t.Fatalf("call %d of function id %d did not reach the plugin", i, staleID)
		}
	}

	var warnings []map[string]any
	for _, record := range gw.Logs.Records("") {
		if record["level"] == "WARN" && strings.Contains(fmt.Sprint(record["msg"]), "function id the plugin does not list") {
			warnings = append(warnings, record)
		}
	}
	if len(warnings) != 1 {
		t.Fatalf("got %d warnings about the function id for %d calls, want 1: %v", len(warnings), calls, warnings)
	}
	want := map[string]any{
		"engine":      "R",
		"function_id": float64(staleID),
		"peer":        dialer.last().LocalAddr().String(),
		"client":      "CN=sse_client",
	}
	for key, value := range want {
		if warnings[0][key] != value {
			t.Errorf("warning %s = %v, want %v", key, warnings[0][key], value)
		}
	}
}
