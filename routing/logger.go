package routing

import (
	"context"
	"log/slog"
)

// replacedHandler adds replaced=true to the records of an engine that a
// reload replaced. The old engine keeps probing its replicas while it
// drains, so that its calls in flight can still replay, and logs the same
// replica events as the engine that replaced it. The attribute marks
// which record is whose.
type replacedHandler struct {
	slog.Handler
	engine *Engine
}

func (h *replacedHandler) Handle(ctx context.Context, record slog.Record) error {
	if h.engine.replaced.Err() != nil {
		record = record.Clone()
		record.AddAttrs(slog.Bool("replaced", true))
	}
	return h.Handler.Handle(ctx, record)
}

func (h *replacedHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &replacedHandler{Handler: h.Handler.WithAttrs(attrs), engine: h.engine}
}

func (h *replacedHandler) WithGroup(name string) slog.Handler {
	return &replacedHandler{Handler: h.Handler.WithGroup(name), engine: h.engine}
}
