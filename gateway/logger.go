package gateway

import (
	"io"
	"log/slog"

	"github.com/ssegw/ssegw/config"
)

// NewLogger returns the gateway's logger for a validated log section.
func NewLogger(cfg config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	// Validate has already rejected anything else.
	_ = level.UnmarshalText([]byte(cfg.Level))
	options := &slog.HandlerOptions{Level: level}
	if cfg.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, options))
	}
	return slog.New(slog.NewTextHandler(w, options))
}
