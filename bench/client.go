package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/ssegw/ssegw/examples/plugin/example"
	"github.com/ssegw/ssegw/ssepb"
	"github.com/ssegw/ssegw/tlsutil"
)

// maxMessageSize is the largest response message the client accepts, in
// bytes: far above the bundles the workloads send back.
const maxMessageSize = 64 << 20

// outgoingFrame is a request message already marshalled, sent as is.
type outgoingFrame []byte

// incomingFrame records the size of a response message without decoding
// or copying it, so that reading costs the client the same little for
// every target.
type incomingFrame struct {
	size int
}

// rawCodec sends outgoingFrame bytes and measures incomingFrame sizes. Its
// empty name keeps the plain application/grpc content type that Qlik
// sends.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	frame, ok := v.(*outgoingFrame)
	if !ok {
		return nil, fmt.Errorf("benchmark codec: cannot encode %T, only pre-marshalled frames", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(*frame)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	frame, ok := v.(*incomingFrame)
	if !ok {
		return fmt.Errorf("benchmark codec: cannot decode into %T, only size records", v)
	}
	frame.size = data.Len()
	return nil
}

func (rawCodec) Name() string { return "" }

// callSpec is one kind of ExecuteFunction call that a workload makes over
// and over: pre-marshalled request bundles, and the size of the response
// that a correct plugin returns.
type callSpec struct {
	// header is the outgoing metadata: Qlik's function and common
	// request headers.
	header metadata.MD
	// requests are the bundles of one call, in order.
	requests []outgoingFrame
	// rowsPerMessage is the row count of each request bundle, and of each
	// response bundle, since both functions return one response bundle
	// per request bundle.
	rowsPerMessage int
	// responseBytes is the total size of a correct response's messages.
	responseBytes int
	// fullDuplex sends from a second goroutine while the caller reads,
	// as Qlik does with many bundles.
	fullDuplex bool
}

// errWrongResponse is returned, wrapped, when a call's response differs in
// size from what the example plugin sends.
var errWrongResponse = errors.New("wrong response")

// newSumOfRowsCall returns a call of SumOfRows with one bundle of rows
// rows of two numeric columns: a small chart call.
func newSumOfRowsCall(rows int) (*callSpec, error) {
	request := &ssepb.BundledRows{}
	response := &ssepb.BundledRows{}
	for i := range rows {
		a, b := float64(i)+0.5, float64(2*i)+0.25
		request.Rows = append(request.Rows, &ssepb.Row{Duals: []*ssepb.Dual{{NumData: a}, {NumData: b}}})
		response.Rows = append(response.Rows, &ssepb.Row{Duals: []*ssepb.Dual{{NumData: a + b}}})
	}
	return newCallSpec(example.FunctionSumOfRows, []*ssepb.BundledRows{request}, response, rows, false)
}

// newEchoCall returns a call of Echo with bundles bundles of rows rows,
// each with three numeric columns and one string column: a large load
// script call, sent and read at the same time.
func newEchoCall(bundles, rows int) (*callSpec, error) {
	bundle := &ssepb.BundledRows{}
	for i := range rows {
		bundle.Rows = append(bundle.Rows, &ssepb.Row{Duals: []*ssepb.Dual{
			{NumData: float64(i) + 0.5},
			{NumData: float64(i) * 1.25},
			{NumData: math.Sqrt(float64(i) + 1)},
			{StrData: fmt.Sprintf("customer-%07d", i)},
		}})
	}
	requests := make([]*ssepb.BundledRows, bundles)
	for i := range requests {
		requests[i] = bundle
	}
	spec, err := newCallSpec(example.FunctionEcho, requests, nil, rows, true)
	if err != nil {
		return nil, err
	}
	spec.responseBytes = bundles * len(spec.requests[0])
	return spec, nil
}

// newCallSpec marshals requests once, and response, when not nil, to
// learn the size of a correct response.
func newCallSpec(functionID int32, requests []*ssepb.BundledRows, response *ssepb.BundledRows, rowsPerMessage int, fullDuplex bool) (*callSpec, error) {
	header, err := ssepb.FunctionCallMetadata(functionID, &ssepb.CommonRequestHeader{AppId: "bench-app", UserId: "bench-user"})
	if err != nil {
		return nil, fmt.Errorf("building the call headers: %w", err)
	}
	spec := &callSpec{header: header, rowsPerMessage: rowsPerMessage, fullDuplex: fullDuplex}
	for _, request := range requests {
		data, err := proto.Marshal(request)
		if err != nil {
			return nil, fmt.Errorf("marshalling a request bundle: %w", err)
		}
		spec.requests = append(spec.requests, data)
	}
	if response != nil {
		data, err := proto.Marshal(response)
		if err != nil {
			return nil, fmt.Errorf("marshalling the expected response: %w", err)
		}
		spec.responseBytes = len(data) * len(requests)
	}
	return spec, nil
}

// requestBytes returns the size of one call's request messages.
func (s *callSpec) requestBytes() int {
	total := 0
	for _, request := range s.requests {
		total += len(request)
	}
	return total
}

// call makes one call on conn and reports each response message's size to
// received. It fails when the response is not the one the example plugin
// sends.
func (s *callSpec) call(ctx context.Context, conn *grpc.ClientConn, received func(size int)) error {
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ctx, s.header))
	defer cancel()

	// Open the stream.
	stream, err := conn.NewStream(ctx, &ssepb.Connector_ServiceDesc.Streams[0], ssepb.Connector_ExecuteFunction_FullMethodName,
		grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		return err
	}

	// Send the bundles and half-close: from a second goroutine for a full
	// duplex call, so that responses are read while requests go out.
	sent := make(chan error, 1)
	if s.fullDuplex {
		go func() { sent <- s.send(stream) }()
	} else {
		sent <- s.send(stream)
	}

	// Read until the plugin's status, which is io.EOF for OK.
	messages, total := 0, 0
	var recvErr error
	for {
		var frame incomingFrame
		if recvErr = stream.RecvMsg(&frame); recvErr != nil {
			break
		}
		messages++
		total += frame.size
		received(frame.size)
	}

	// Stop the sender, when the response ended first, and check what came.
	cancel()
	sendErr := <-sent
	if !errors.Is(recvErr, io.EOF) {
		return recvErr
	}
	if sendErr != nil {
		return fmt.Errorf("sending the request: %w", sendErr)
	}
	if messages != len(s.requests) || total != s.responseBytes {
		return fmt.Errorf("%w: %d messages of %d bytes in all, expected %d of %d",
			errWrongResponse, messages, total, len(s.requests), s.responseBytes)
	}
	return nil
}

// send writes every request bundle and half-closes. SendMsg returns io.EOF
// when the server ended the call, whose status RecvMsg then returns, so
// that is no send error.
func (s *callSpec) send(stream grpc.ClientStream) error {
	for i := range s.requests {
		if err := stream.SendMsg(&s.requests[i]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
	return stream.CloseSend()
}

// dial returns a client connection to address: plaintext, or mutual TLS
// with the certificates of a Qlik-style folder when tlsDir is set.
func dial(address, tlsDir string) (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if tlsDir != "" {
		tlsConfig, err := tlsutil.ClientFilesInDir(tlsDir, "", "", "").ClientConfig("")
		if err != nil {
			return nil, fmt.Errorf("loading Qlik's client certificates from %s: %w", tlsDir, err)
		}
		creds = credentials.NewTLS(tlsConfig)
	}
	conn, err := grpc.NewClient("passthrough:///"+address,
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageSize)))
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", address, err)
	}
	return conn, nil
}

// checkCapabilities calls GetCapabilities through conn and checks that the
// example plugin answered, which shows the whole path works.
func checkCapabilities(ctx context.Context, conn *grpc.ClientConn) error {
	capabilities, err := ssepb.NewConnectorClient(conn).GetCapabilities(ctx, &ssepb.Empty{})
	if err != nil {
		return fmt.Errorf("calling GetCapabilities: %w", err)
	}
	if got := capabilities.GetPluginIdentifier(); got != pluginName {
		return fmt.Errorf("GetCapabilities returned plugin %q, expected the example plugin %q", got, pluginName)
	}
	return nil
}

var _ encoding.CodecV2 = rawCodec{}
