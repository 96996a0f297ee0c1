package config

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Telemetry configures traces and metrics. Keys left empty fall back to
// the standard OpenTelemetry environment variables (OTEL_TRACES_EXPORTER,
// OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_TRACES_SAMPLER, OTEL_SERVICE_NAME and
// the others, read as the OpenTelemetry SDKs read them); keys set here
// take precedence over them.
type Telemetry struct {
	// ServiceName is the service.name of traces and metrics. Empty means
	// OTEL_SERVICE_NAME, or "ssegw".
	ServiceName string `mapstructure:"service_name"`

	Traces  TraceExport  `mapstructure:"traces"`
	Metrics MetricExport `mapstructure:"metrics"`
}

// Exporter names accepted in telemetry.traces.exporter and
// telemetry.metrics.exporter.
const (
	ExporterOTLP     = "otlp"      // OTLP over gRPC
	ExporterOTLPHTTP = "otlp-http" // OTLP over HTTP with protobuf
	ExporterStdout   = "stdout"    // one JSON document per span or batch, for debugging
	ExporterNone     = "none"
)

// TraceExport says where spans go. Without an exporter, here or in the
// environment, spans are still made, for the access log and the status
// page, and cost little.
type TraceExport struct {
	// Exporter is otlp, otlp-http, stdout or none. Empty means
	// OTEL_TRACES_EXPORTER, or none.
	Exporter string `mapstructure:"exporter"`

	// Endpoint is the collector's address, host:port or a URL. Empty
	// means OTEL_EXPORTER_OTLP_ENDPOINT, or the OpenTelemetry default on
	// localhost.
	Endpoint string `mapstructure:"endpoint"`

	// Insecure sends OTLP without TLS, as to a collector on the same host.
	Insecure bool `mapstructure:"insecure"`

	// SamplerRatio is the share of new traces recorded, from 0 to 1; a call
	// that continues a trace follows its parent's decision. Unset means
	// OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG, or every trace.
	SamplerRatio *float64 `mapstructure:"sampler_ratio"`
}

// MetricExport says where metrics go besides the admin listener's
// /metrics, which always serves them in the Prometheus format.
type MetricExport struct {
	// Exporter is otlp, otlp-http, stdout or none. Empty means
	// OTEL_METRICS_EXPORTER, or none.
	Exporter string `mapstructure:"exporter"`

	// Endpoint and Insecure are as for traces.
	Endpoint string `mapstructure:"endpoint"`
	Insecure bool   `mapstructure:"insecure"`

	// Interval between exports. 0 means OTEL_METRIC_EXPORT_INTERVAL, or 60s.
	Interval time.Duration `mapstructure:"interval"`
}

// Redaction says how the ids Qlik sends with each call appear in spans,
// logs and the status page. Metrics never carry them.
type Redaction struct {
	// AppID is keep, hash (the first 16 hex digits of its SHA-256) or
	// drop. Default keep.
	AppID string `mapstructure:"app_id"`

	// UserID is keep, hash or drop. Default hash: user ids name people.
	UserID string `mapstructure:"user_id"`

	// ScriptText records the text of EvaluateScript calls in spans. False,
	// the default, records only its length and SHA-256.
	ScriptText bool `mapstructure:"script_text"`
}

// Redaction modes.
const (
	RedactKeep = "keep"
	RedactHash = "hash"
	RedactDrop = "drop"
)

// Admin is the HTTP listener for health checks, metrics and the status
// page.
type Admin struct {
	// Address is host:port. Default 127.0.0.1:8081, reachable from the
	// gateway's host only; "none" turns the listener off.
	Address string `mapstructure:"address"`

	// Pprof serves Go's profiles under /debug/pprof/, to find where a
	// live gateway spends its time or memory. Off by default: a profile
	// shows the process's internals and costs CPU while it runs.
	Pprof bool `mapstructure:"pprof"`
}

// DefaultAdminAddress is where the admin listener serves by default.
const DefaultAdminAddress = "127.0.0.1:8081"

func (c *Config) applyObservabilityDefaults() {
	orDefault(&c.Redaction.AppID, RedactKeep)
	orDefault(&c.Redaction.UserID, RedactHash)
	orDefault(&c.Admin.Address, DefaultAdminAddress)
	// The exporters take an endpoint as it is, spaces included.
	c.Telemetry.Traces.Endpoint = strings.TrimSpace(c.Telemetry.Traces.Endpoint)
	c.Telemetry.Metrics.Endpoint = strings.TrimSpace(c.Telemetry.Metrics.Endpoint)
	if c.Log.AccessLog == nil {
		on := true
		c.Log.AccessLog = &on
	}
}

// validateObservability reports problems in the telemetry, redaction and
// admin sections.
func (c *Config) validateObservability(report func(string, ...any)) {
	exporters := []string{"", ExporterOTLP, ExporterOTLPHTTP, ExporterStdout, ExporterNone}
	if !slices.Contains(exporters, c.Telemetry.Traces.Exporter) {
		report("telemetry.traces.exporter: unknown exporter %q; use otlp, otlp-http, stdout or none", c.Telemetry.Traces.Exporter)
	}
	if !slices.Contains(exporters, c.Telemetry.Metrics.Exporter) {
		report("telemetry.metrics.exporter: unknown exporter %q; use otlp, otlp-http, stdout or none", c.Telemetry.Metrics.Exporter)
	}
	if err := CheckEndpoint(c.Telemetry.Traces.Endpoint, c.Telemetry.Traces.Exporter); err != nil {
		report("telemetry.traces.endpoint: %v", err)
	}
	if err := CheckEndpoint(c.Telemetry.Metrics.Endpoint, c.Telemetry.Metrics.Exporter); err != nil {
		report("telemetry.metrics.endpoint: %v", err)
	}
	if ratio := c.Telemetry.Traces.SamplerRatio; ratio != nil && (*ratio < 0 || *ratio > 1) {
		report("telemetry.traces.sampler_ratio: %v is outside 0 to 1", *ratio)
	}
	if c.Telemetry.Metrics.Interval < 0 {
		report("telemetry.metrics.interval: %v is negative", c.Telemetry.Metrics.Interval)
	}
	modes := []string{RedactKeep, RedactHash, RedactDrop}
	if !slices.Contains(modes, c.Redaction.AppID) {
		report("redaction.app_id: unknown mode %q; use keep, hash or drop", c.Redaction.AppID)
	}
	if !slices.Contains(modes, c.Redaction.UserID) {
		report("redaction.user_id: unknown mode %q; use keep, hash or drop", c.Redaction.UserID)
	}
	if c.Admin.Address != "none" {
		if err := checkListenAddress(c.Admin.Address); err != nil {
			report("admin.address: %v", err)
			return
		}
		if i, ok := c.listenerPorts().conflict(c.Admin.Address); ok {
			report("admin.address: %q is already used by listeners[%d]; the admin listener needs its own port", c.Admin.Address, i)
		}
	}
}

// grpcTargetSchemes are the target schemes that grpc-go resolves itself,
// which an OTLP/gRPC endpoint may use instead of host:port.
var grpcTargetSchemes = []string{"unix", "unix-abstract", "dns", "passthrough"}

// IsGRPCTargetScheme reports whether scheme is one of grpc-go's own.
func IsGRPCTargetScheme(scheme string) bool {
	return slices.Contains(grpcTargetSchemes, scheme)
}

// CheckEndpoint returns why an OTLP endpoint cannot work for exporter
// (otlp, otlp-http, or "" when the environment picks it). It rejects only
// what fails for certain, since a rejection stops the gateway's start. That
// is an http:// or https:// URL that does not parse, names no host or has
// a port past 65535, and a gRPC target for OTLP/HTTP. It is also an
// unknown scheme before "://", and host:port that does not split, as an
// IPv6 address without brackets.
func CheckEndpoint(endpoint, exporter string) error {
	endpoint = strings.TrimSpace(endpoint)
	if endpoint == "" {
		return nil
	}
	u, err := url.Parse(endpoint)
	switch {
	case err != nil && (hasPrefixFold(endpoint, "http://") || hasPrefixFold(endpoint, "https://")):
		return fmt.Errorf("%q is not a valid URL: %v", endpoint, errors.Unwrap(err))
	case err != nil || u.Scheme == "":
		return checkHostPort(endpoint, exporter)
	case u.Scheme == "http" || u.Scheme == "https": // url.Parse lower-cases it
		if u.Host == "" {
			return fmt.Errorf("%q names no host; write it as http://collector:4318", endpoint)
		}
		return checkPortNumber(endpoint, u.Port())
	case IsGRPCTargetScheme(u.Scheme):
		if exporter == ExporterOTLPHTTP {
			return fmt.Errorf("%q is a gRPC target; OTLP/HTTP takes an http:// or https:// URL", endpoint)
		}
		return nil
	case strings.HasPrefix(endpoint[len(u.Scheme):], "://"):
		return fmt.Errorf("%q has the unknown scheme %q; write host:port, or an http:// or https:// URL", endpoint, u.Scheme)
	}
	// collector:4317 parses as the scheme "collector".
	return checkHostPort(endpoint, exporter)
}

// checkHostPort checks an endpoint written as host:port. A host alone
// passes, though gRPC then dials port 443 and HTTP port 80. A port given
// as a service name passes for gRPC, which may resolve it, and fails for
// OTLP/HTTP, whose URL takes only a number.
func checkHostPort(endpoint, exporter string) error {
	_, port, err := net.SplitHostPort(endpoint)
	reason := ""
	if addrErr, ok := errors.AsType[*net.AddrError](err); ok {
		reason = addrErr.Err
	}
	switch {
	case err != nil && strings.Count(endpoint, ":") > 1 && !strings.HasPrefix(endpoint, "["):
		return fmt.Errorf("%q has an IPv6 address without brackets; write the address in brackets, such as [::1]:4317 for OTLP/gRPC or http://[::1]:4318 for OTLP/HTTP", endpoint)
	case reason == "missing port in address":
		return nil
	case err != nil:
		return fmt.Errorf("%q is not host:port: %s", endpoint, cmp.Or(reason, err.Error()))
	}
	if _, err := strconv.Atoi(port); err != nil && exporter == ExporterOTLPHTTP {
		return fmt.Errorf("%q has the port %q; OTLP/HTTP takes a number", endpoint, port)
	}
	return checkPortNumber(endpoint, port)
}

// checkPortNumber rejects a numeric port past the range of TCP ports.
func checkPortNumber(endpoint, port string) error {
	if n, err := strconv.Atoi(port); err == nil && (n < 0 || n > 65535) {
		return fmt.Errorf("%q has the port %s; want a number from 0 to 65535", endpoint, port)
	}
	return nil
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
