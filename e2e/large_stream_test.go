package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
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
// stream as a whole, every message reaches the plugin unchanged and in
// order (the plugin's SHA-256 of the messages equals the client's), and
// the gateway's memory stays bounded because it forwards message by
// message instead of buffering.
func TestLargeRequestStream(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skipf("reading the gateway's memory needs /proc: %v", err)
	}

	// The plugin returns one row with the bytes and the number of
	// messages it received, and the SHA-256 of the messages in order.
	plugin := ssetest.StartPlugin(t, &ssetest.Connector{Execute: func(stream ssetest.Stream) error {
		var received streamed
		hash := sha256.New()
		for {
			var message ssetest.Raw
			err := stream.RecvMsg(&message)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			hash.Write(message)
			received.bytes += int64(len(message))
			received.messages++
		}
		received.sha256 = hex.EncodeToString(hash.Sum(nil))
		row := &ssepb.Row{Duals: []*ssepb.Dual{{NumData: float64(received.bytes)}, {NumData: float64(received.messages)}, {StrData: received.sha256}}}
		return stream.Send(&ssepb.BundledRows{Rows: []*ssepb.Row{row}})
	}})
	// The race detector's own memory would swamp the gateway's, so the
	// gateway here is built without it even under go test -race.
	gw := startGatewayProgram(t, ssetest.BinaryWithoutRace(t, "./cmd/ssegw"), map[string]any{
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
	if got, sent, err := streamBundles(ctx, client, bundle, 10); err != nil {
		t.Fatalf("warm-up call: %v", err)
	} else if got != sent {
		t.Fatalf("warm-up call: plugin received %+v, want %+v as sent", got, sent)
	}
	pid := gw.Cmd.Process.Pid
	baseline := procStatusBytes(t, pid, "VmRSS")

	// The large call.
	start := time.Now()
	got, sent, err := streamBundles(ctx, client, bundle, largeBundles)
	elapsed := time.Since(start)
	if code := status.Code(err); code != codes.OK {
		t.Fatalf("call of %d bundles of %d bytes: status = %v (%v), want OK", largeBundles, largeBundleBytes, code, err)
	}
	if want := int64(largeBundles * largeBundleBytes); sent.bytes != want || sent.messages != largeBundles {
		t.Fatalf("client sent %d bytes in %d messages, want %d in %d", sent.bytes, sent.messages, want, largeBundles)
	}
	if got.bytes != sent.bytes {
		t.Errorf("bytes received by the plugin = %d, want %d", got.bytes, sent.bytes)
	}
	if got.messages != sent.messages {
		t.Errorf("messages received by the plugin = %d, want %d", got.messages, sent.messages)
	}
	if got.sha256 != sent.sha256 {
		t.Errorf("SHA-256 of the messages received by the plugin = %s, want %s as sent", got.sha256, sent.sha256)
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

// streamed is what one end of a call sent or received: bytes and
// messages, and the SHA-256 of the messages in order, in hex.
type streamed struct {
	bytes, messages int64
	sha256          string
}

// numberedBundle returns a copy of bundle whose string ends with number,
// so that a lost, repeated or reordered message changes the SHA-256 of the
// stream. The string is the last field of largeBundle's encoding, so the
// number replaces its last bytes.
func numberedBundle(bundle ssetest.Raw, number int) ssetest.Raw {
	numbered := slices.Clone(bundle)
	digits := fmt.Sprintf("%010d", number)
	copy(numbered[len(numbered)-len(digits):], digits)
	return numbered
}

// streamBundles sends count numbered copies of bundle on one
// ExecuteFunction call, half-closes, and returns what the plugin's only
// row reports it received and what the client sent. The error is the
// call's status, nil for OK.
func streamBundles(ctx context.Context, client ssepb.ConnectorClient, bundle ssetest.Raw, count int) (received, sent streamed, err error) {
	stream, err := client.ExecuteFunction(ctx)
	if err != nil {
		return received, sent, err
	}
	hash := sha256.New()
	for i := range count {
		message := numberedBundle(bundle, i)
		if err := stream.SendMsg(&message); err != nil {
			break // the status comes from RecvMsg
		}
		hash.Write(message)
		sent.bytes += int64(len(message))
		sent.messages++
	}
	sent.sha256 = hex.EncodeToString(hash.Sum(nil))
	if err := stream.CloseSend(); err != nil {
		return received, sent, err
	}

	var rows []*ssepb.Row
	for {
		response, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return received, sent, err
		}
		rows = append(rows, response.GetRows()...)
	}
	if len(rows) != 1 || len(rows[0].GetDuals()) != 3 {
		return received, sent, fmt.Errorf("plugin returned rows %v, want one row of bytes, messages and SHA-256", rows)
	}
	duals := rows[0].GetDuals()
	received = streamed{bytes: int64(duals[0].GetNumData()), messages: int64(duals[1].GetNumData()), sha256: duals[2].GetStrData()}
	return received, sent, nil
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
