package gateway

import (
	"context"

	"google.golang.org/grpc/stats"
)

// backendEvents tells an attempt when the plugin's status arrived. Only then
// is a failed backend stream the plugin's own answer, to be passed on
// untouched; without it, the failure happened in the gateway or on the
// connection, and the gateway names it.
//
// gRPC exposes this only through a stats handler (as of grpc-go v1.85). A
// stats handler also makes gRPC allocate a small event for every message
// sent and received on the backend side, which this handler ignores.
type backendEvents struct{}

func (backendEvents) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	return ctx
}

func (backendEvents) HandleRPC(ctx context.Context, event stats.RPCStats) {
	// InTrailer covers both trailers after a response and a trailers-only
	// response: both carry the plugin's grpc-status.
	if _, ok := event.(*stats.InTrailer); !ok {
		return
	}
	if a, ok := ctx.Value(attemptKey{}).(*attempt); ok {
		a.statusReceived.Store(true)
	}
}

func (backendEvents) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}

func (backendEvents) HandleConn(context.Context, stats.ConnStats) {}

var _ stats.Handler = backendEvents{}
