package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/ssepb"
)

// The large request stream is about 300 MB, like the one a large
// LOAD ... EXTENSION statement sends.
const (
	largeBundles     = 6000
	largeBundleBytes = 50_000

	// maxRSSGrowth bounds how far the gateway's peak resident memory may
	// rise above its resident memory after start-up and a warm-up call.
	maxRSSGrowth = 64 << 20
)

// TestLargeRequestStream checks that one ExecuteFunction call can stream
// about 300 MB through an `ssegw serve` process: no limit applies to the
// stream as a whole, every byte reaches the plugin, and the gateway's
// memory stays bounded because it forwards message by message instead of
// buffering. (C19)
func TestLargeRequestStream(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skipf("reading the gateway's memory needs /proc: %v", err)
	}

	// The plugin counts what arrives and returns one row with the total
	// bytes and the number of messages.
	plugin := ssetest.StartPlugin(t, &ssetest.Connector{Execute: func(stream ssetest.Stream) error {
		var total, count int64
		for {
			var message ssetest.Raw
			err := stream.RecvMsg(&message)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			total += int64(len(message))
			count++
		}
		row := &ssepb.Row{Duals: []*ssepb.Dual{{NumData: float64(total)}, {NumData: float64(count)}}}
		return stream.Send(&ssepb.BundledRows{Rows: []*ssepb.Row{row}})
	}})
	gw := startGatewayProcess(t, map[string]any{
		"listeners": []map[string]any{{"address": "127.0.0.1:0", "engine": "R", "insecure": true}},
		"engines":   map[string]any{"R": map[string]any{"backends": []map[string]any{{"address": plugin.Addr}}}},
	})
	client := ssetest.Dial(t, gw.Addrs[0])
	md, err := ssepb.FunctionCallMetadata(0, &ssepb.CommonRequestHeader{AppId: "app", UserId: "user", Cardinality: largeBundles})
	if err != nil {
		t.Fatal(err)
	}
	ctx := metadata.NewOutgoingContext(testContext(t, 5*time.Minute), md)
	bundle := largeBundle(t)

	// Warm up, so that the baseline includes the connections and buffers
	// that every call uses.
	if got, err := streamBundles(ctx, client, bundle, 10); err != nil {
		t.Fatalf("warm-up call: %v", err)
	} else if want := [2]float64{10 * largeBundleBytes, 10}; got != want {
		t.Fatalf("warm-up call: plugin counted [bytes messages] = %v, want %v", got, want)
	}
	pid := gw.Cmd.Process.Pid
	baseline := procStatusBytes(t, pid, "VmRSS")

	// The large call.
	start := time.Now()
	got, err := streamBundles(ctx, client, bundle, largeBundles)
	elapsed := time.Since(start)
	if code := status.Code(err); code != codes.OK {
		t.Fatalf("call of %d bundles of %d bytes: status = %v (%v), want OK", largeBundles, largeBundleBytes, code, err)
	}
	if want := float64(largeBundles * largeBundleBytes); got[0] != want {
		t.Errorf("bytes counted by the plugin = %.0f, want %.0f", got[0], want)
	}
	if want := float64(largeBundles); got[1] != want {
		t.Errorf("messages counted by the plugin = %.0f, want %.0f", got[1], want)
	}

	// The gateway's peak memory since it started.
	peak := procStatusBytes(t, pid, "VmHWM")
	t.Logf("streamed %d MB in %v; gateway resident memory: %d MiB after warm-up, peak %d MiB",
		largeBundles*largeBundleBytes/1_000_000, elapsed.Round(time.Millisecond), baseline>>20, peak>>20)
	if growth := peak - baseline; growth >= maxRSSGrowth {
		t.Errorf("gateway peak resident memory - resident memory after warm-up = %d MiB, want less than %d MiB", growth>>20, maxRSSGrowth>>20)
	}
}

// largeBundle returns a BundledRows message of exactly largeBundleBytes
// bytes on the wire, made of one row with one long string.
func largeBundle(t *testing.T) ssetest.Raw {
	t.Helper()
	for length := largeBundleBytes; length > 0; length-- {
		message := &ssepb.BundledRows{Rows: []*ssepb.Row{{Duals: []*ssepb.Dual{{StrData: strings.Repeat("x", length)}}}}}
		if proto.Size(message) > largeBundleBytes {
			continue
		}
		data, err := proto.Marshal(message)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) != largeBundleBytes {
			t.Fatalf("no string length makes a bundle of exactly %d bytes; closest is %d", largeBundleBytes, len(data))
		}
		return data
	}
	t.Fatalf("no bundle fits in %d bytes", largeBundleBytes)
	return nil
}

// streamBundles sends bundle count times on one ExecuteFunction call,
// half-closes, and returns the two numbers of the plugin's only row. The
// error is the call's status, nil for OK.
func streamBundles(ctx context.Context, client ssepb.ConnectorClient, bundle ssetest.Raw, count int) ([2]float64, error) {
	var counted [2]float64
	stream, err := client.ExecuteFunction(ctx)
	if err != nil {
		return counted, err
	}
	for range count {
		if err := stream.SendMsg(&bundle); err != nil {
			break // the status comes from RecvMsg
		}
	}
	if err := stream.CloseSend(); err != nil {
		return counted, err
	}

	var rows []*ssepb.Row
	for {
		response, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return counted, err
		}
		rows = append(rows, response.GetRows()...)
	}
	if len(rows) != 1 || len(rows[0].GetDuals()) != 2 {
		return counted, fmt.Errorf("plugin returned rows %v, want one row of two numbers", rows)
	}
	counted[0], counted[1] = rows[0].GetDuals()[0].GetNumData(), rows[0].GetDuals()[1].GetNumData()
	return counted, nil
}

// procStatusBytes returns a memory field of /proc/PID/status, such as
// VmRSS or VmHWM, in bytes.
func procStatusBytes(t *testing.T, pid int, field string) int64 {
	t.Helper()
	path := fmt.Sprintf("/proc/%d/status", pid)
	file, err := os.Open(path)
	if err != nil {
		t.Fatalf("reading the gateway's memory: %v", err)
	}
	defer file.Close()
	scanner := bufio.NewScanner(file)
	for scanner.Scan() {
		value, ok := strings.CutPrefix(scanner.Text(), field+":")
		if !ok {
			continue
		}
		// The kernel writes sizes as "  123456 kB".
		kilobytes, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			t.Fatalf("%s: %s = %q, want a size in kB", path, field, value)
		}
		return kilobytes << 10
	}
	t.Fatalf("%s has no %s line", path, field)
	return 0
}
