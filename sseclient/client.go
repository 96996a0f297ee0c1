// Package sseclient is a client for SSE plugins and for the gateway that
// behaves as a Qlik engine does: it sends the qlik-*-bin headers, streams
// rows in bundles, half-closes, and reads the response headers, rows and
// trailers.
package sseclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/ssegw/ssegw/ssepb"
	"github.com/ssegw/ssegw/tlsutil"
)

// Options configure a Client. The zero value connects in plaintext.
type Options struct {
	// TLSDir is a folder in the layout Qlik reads for an analytic
	// connection: root_cert.pem, sse_client_cert.pem, sse_client_key.pem.
	// Empty means plaintext.
	TLSDir string

	// ServerName is verified against the server's certificate, and sent as
	// the TLS server name and the :authority of calls. Empty means the
	// host of the address.
	ServerName string

	// Engine, when set, is sent as the x-sse-engine header, which selects
	// the engine on a gateway without relying on host names.
	Engine string

	// MaxMessageSize is the largest message received, in bytes. Zero
	// means 4 MiB, the limit of Qlik's engine and of gRPC by default.
	MaxMessageSize int
}

// Client calls one SSE endpoint: a plugin, or the gateway.
type Client struct {
	conn      *grpc.ClientConn
	connector ssepb.ConnectorClient
	engine    string
	address   string
	tls       bool
}

// Dial prepares a client for address (host:port). It connects on the first
// call.
func Dial(address string, opts Options) (*Client, error) {
	creds := insecure.NewCredentials()
	if opts.TLSDir != "" {
		tlsConfig, err := tlsutil.ClientFilesInDir(opts.TLSDir, "", "", "").ClientConfig(opts.ServerName)
		if err != nil {
			return nil, err
		}
		creds = credentials.NewTLS(tlsConfig)
	}
	dialOptions := []grpc.DialOption{grpc.WithTransportCredentials(creds), grpc.WithStatsHandler(statusWatch{})}
	if opts.ServerName != "" {
		dialOptions = append(dialOptions, grpc.WithAuthority(opts.ServerName))
	}
	if opts.MaxMessageSize > 0 {
		dialOptions = append(dialOptions, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(opts.MaxMessageSize)))
	}
	conn, err := grpc.NewClient("passthrough:///"+address, dialOptions...)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", address, err)
	}
	return &Client{
		conn:      conn,
		connector: ssepb.NewConnectorClient(conn),
		engine:    opts.Engine,
		address:   address,
		tls:       opts.TLSDir != "",
	}, nil
}

// Close closes the connection.
func (c *Client) Close() error {
	return c.conn.Close()
}

// Result is what a call returned.
type Result struct {
	Header   metadata.MD
	Trailer  metadata.MD
	Bundles  []*ssepb.BundledRows
	Duration time.Duration
}

// Rows returns the rows of every bundle, in order.
func (r *Result) Rows() []*ssepb.Row {
	var rows []*ssepb.Row
	for _, bundle := range r.Bundles {
		rows = append(rows, bundle.GetRows()...)
	}
	return rows
}

// Capabilities calls GetCapabilities. The header is returned too, for the
// instance that answered.
func (c *Client) Capabilities(ctx context.Context) (*ssepb.Capabilities, metadata.MD, error) {
	var header metadata.MD
	ctx, answered := watchStatus(ctx)
	capabilities, err := c.connector.GetCapabilities(c.outgoing(ctx, nil), &ssepb.Empty{}, grpc.Header(&header))
	return capabilities, header, c.connectionError(err, answered)
}

// ExecuteFunction calls a plugin function by id with the given bundles.
func (c *Client) ExecuteFunction(ctx context.Context, functionID int32, common *ssepb.CommonRequestHeader, bundles []*ssepb.BundledRows) (*Result, error) {
	md, err := ssepb.FunctionCallMetadata(functionID, common)
	if err != nil {
		return nil, err
	}
	return c.stream(c.outgoing(ctx, md), c.connector.ExecuteFunction, bundles)
}

// EvaluateScript calls EvaluateScript with the given script header and
// bundles.
func (c *Client) EvaluateScript(ctx context.Context, script *ssepb.ScriptRequestHeader, common *ssepb.CommonRequestHeader, bundles []*ssepb.BundledRows) (*Result, error) {
	md, err := ssepb.ScriptCallMetadata(script, common)
	if err != nil {
		return nil, err
	}
	return c.stream(c.outgoing(ctx, md), c.connector.EvaluateScript, bundles)
}

func (c *Client) outgoing(ctx context.Context, md metadata.MD) context.Context {
	if c.engine != "" {
		if md == nil {
			md = metadata.MD{}
		}
		md.Set("x-sse-engine", c.engine)
	}
	if md == nil {
		return ctx
	}
	return metadata.NewOutgoingContext(ctx, md)
}

type bidiStream = grpc.BidiStreamingClient[ssepb.BundledRows, ssepb.BundledRows]

// stream sends bundles while it reads the answers, as Qlik does: a plugin
// may answer each bundle before it has the next.
func (c *Client) stream(ctx context.Context, open func(context.Context, ...grpc.CallOption) (bidiStream, error), bundles []*ssepb.BundledRows) (*Result, error) {
	start := time.Now()
	ctx, answered := watchStatus(ctx)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := open(ctx)
	if err != nil {
		return nil, c.connectionError(err, answered)
	}

	// Send in the background; a send error ends the call, whose status
	// then comes from Recv.
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for _, bundle := range bundles {
			if stream.Send(bundle) != nil {
				return
			}
		}
		_ = stream.CloseSend()
	}()

	result := &Result{}
	var callErr error
	for {
		bundle, err := stream.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				callErr = err
			}
			break
		}
		result.Bundles = append(result.Bundles, bundle)
	}
	cancel() // unblocks a send still waiting after the call ended
	<-sent
	result.Header, _ = stream.Header()
	result.Trailer = stream.Trailer()
	result.Duration = time.Since(start)
	return result, c.connectionError(callErr, answered)
}

// ConnectionError is returned by a call that failed because the client
// could not connect to the endpoint, or lost the connection, rather than
// with a status that the endpoint sent. Its Err is the call's status
// error, so status.Code still applies.
type ConnectionError struct {
	// Address is the endpoint's host:port, as given to Dial.
	Address string
	// TLS reports whether the client used TLS.
	TLS bool
	// Closed reports that the endpoint closed a connection that worked,
	// with HTTP/2 GOAWAY, as a server does when it stops.
	Closed bool
	Err    error
}

func (e *ConnectionError) Error() string {
	if e.Closed {
		return fmt.Sprintf("%s closed the connection: %s", e.Address, status.Convert(e.Err).Message())
	}
	return fmt.Sprintf("connecting to %s: %s", e.Address, status.Convert(e.Err).Message())
}

func (e *ConnectionError) Unwrap() error { return e.Err }

// connectionError wraps err in a ConnectionError when the call failed for
// want of a connection: a failed dial, TLS handshake or lost connection.
// A status the endpoint sent itself is never one, even when the endpoint
// closed the connection right after, as a stopping gateway does. It
// returns other errors, and nil, unchanged.
func (c *Client) connectionError(err error, answered *atomic.Bool) error {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
	default:
		return err
	}
	if answered.Load() || c.conn.GetState() == connectivity.Ready {
		return err
	}
	// gRPC has no error type for it: its message names the GOAWAY (as of
	// grpc-go v1.85).
	closed := strings.Contains(strings.ToLower(status.Convert(err).Message()), "goaway")
	return &ConnectionError{Address: c.address, TLS: c.tls, Closed: closed, Err: err}
}

// statusWatch is a stats handler that records, for a call made with a
// context from watchStatus, that the endpoint ended it with its own status:
// gRPC reports the HTTP/2 trailers that carry it as InTrailer.
type statusWatch struct{}

type answeredKey struct{}

// watchStatus returns ctx marked for statusWatch, and the flag it sets.
func watchStatus(ctx context.Context) (context.Context, *atomic.Bool) {
	answered := new(atomic.Bool)
	return context.WithValue(ctx, answeredKey{}, answered), answered
}

func (statusWatch) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

func (statusWatch) HandleRPC(ctx context.Context, s stats.RPCStats) {
	if _, ok := s.(*stats.InTrailer); !ok {
		return
	}
	if answered, _ := ctx.Value(answeredKey{}).(*atomic.Bool); answered != nil {
		answered.Store(true)
	}
}

func (statusWatch) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

func (statusWatch) HandleConn(context.Context, stats.ConnStats) {}
