// Package config defines ssegw's configuration file, loads it with viper,
// applies SSEGW_ environment overrides and validates the result.
//
// The YAML keys are snake_case and equal to the mapstructure tags below. A
// field's documentation gives its meaning, default and what zero means.
package config

import (
	"math"
	"net"
	"strings"
	"time"
)

// Defaults for keys that a file may leave out.
const (
	DefaultMaxMessageSize      ByteSize      = 16 << 20
	DefaultMaxHeaderListSize   ByteSize      = 64 << 10
	DefaultMinPingInterval     time.Duration = 5 * time.Second
	DefaultBackendPingInterval time.Duration = 5 * time.Minute
	DefaultLogLevel                          = "info"
	DefaultLogFormat                         = "text"
)

// Config is the whole configuration of one gateway process.
type Config struct {
	// Listeners are the addresses Qlik engines connect to. At least one.
	Listeners []Listener `mapstructure:"listeners"`

	// Engines maps each Qlik engine name (the alias used in expressions, as
	// in SSEPython.MyFunction) to the plugin that serves it. At least one.
	Engines map[string]*Engine `mapstructure:"engines"`

	// Limits bounds messages and headers on both sides of the gateway.
	Limits Limits `mapstructure:"limits"`

	// Keepalive sets the HTTP/2 ping policy towards Qlik and plugins.
	Keepalive Keepalive `mapstructure:"keepalive"`

	// Log selects the level and format of the gateway's log on stderr.
	Log Log `mapstructure:"log"`

	// Telemetry configures the export of traces and metrics.
	Telemetry Telemetry `mapstructure:"telemetry"`

	// Redaction says how Qlik's app and user ids appear in spans and logs.
	Redaction Redaction `mapstructure:"redaction"`

	// Admin is the HTTP listener for health, metrics and the status page.
	Admin Admin `mapstructure:"admin"`

	// StateDir is a folder where the gateway keeps each engine's
	// capabilities, so that after a restart it can answer Qlik's
	// GetCapabilities while every plugin is down. Empty, the default, keeps
	// them in memory only.
	StateDir string `mapstructure:"state_dir"`

	// DrainTimeout is how long a stopping gateway waits for calls in
	// flight, and how long a reload keeps replaced engines for theirs.
	// Default 30s.
	DrainTimeout time.Duration `mapstructure:"drain_timeout"`

	// CertificateExpiryWarning is how long before a certificate expires
	// the gateway starts to warn, in its log and on /readyz. Default 720h
	// (30 days).
	CertificateExpiryWarning time.Duration `mapstructure:"certificate_expiry_warning"`
}

// DefaultCertificateExpiryWarning is the default of
// certificate_expiry_warning.
const DefaultCertificateExpiryWarning = 30 * 24 * time.Hour

// DefaultDrainTimeout is the default of drain_timeout.
const DefaultDrainTimeout = 30 * time.Second

// Listener is one address on which the gateway accepts Qlik's gRPC calls.
type Listener struct {
	// Address is host:port to listen on; an empty host means every
	// interface. Port 0 picks a free port (for tests).
	Address string `mapstructure:"address"`

	// Engine is the engine that calls on this listener go to when neither an
	// x-sse-engine header nor the requested host name selects one. Empty
	// means such calls fail with Unimplemented.
	Engine string `mapstructure:"engine"`

	// TLS makes the listener require mutual TLS, as Qlik does when an
	// analytic connection has a certificate folder.
	TLS *ServerTLS `mapstructure:"tls"`

	// Insecure must be true for a listener without TLS, so that plaintext
	// is always a visible choice and never the result of a forgotten key.
	Insecure bool `mapstructure:"insecure"`

	// InsecureRemote must also be true for a plaintext listener on an
	// address other hosts can reach: Qlik's ids and rows would cross the
	// network in the clear.
	InsecureRemote bool `mapstructure:"insecure_remote"`
}

// ServerTLS locates the gateway's server certificate and the CA that signs
// Qlik's client certificates. Either Dir, or CertFile, KeyFile and
// ClientCAFile; explicit files take precedence over the folder's.
type ServerTLS struct {
	// Dir is a folder in the layout of an SSE plugin's certificates:
	// root_cert.pem, sse_server_cert.pem and sse_server_key.pem.
	Dir string `mapstructure:"dir"`

	CertFile     string `mapstructure:"cert_file"`
	KeyFile      string `mapstructure:"key_file"`
	ClientCAFile string `mapstructure:"client_ca_file"`
}

// Engine is one Qlik engine name and the plugin replicas behind it.
type Engine struct {
	// Name is the engine's key in the engines map, with its spelling from
	// the file. It is not a YAML key.
	Name string `mapstructure:"-"`

	// Hosts are host names that select this engine when Qlik connects with
	// one of them (the :authority of the call, or the TLS server name).
	// Several engines can then share one listener. Matching ignores case
	// and the port.
	Hosts []string `mapstructure:"hosts"`

	// RequestTimeout bounds each call to the plugin. 0, the default, means
	// no limit, as in Qlik. A shorter deadline from the client still wins.
	RequestTimeout time.Duration `mapstructure:"request_timeout"`

	// Backends are the plugin replicas; Balancer spreads calls over the
	// ready ones. At least one.
	Backends []Backend `mapstructure:"backends"`

	// ProbeInterval is how often each replica's GetCapabilities is called
	// to check its health and learn its functions. Default 10s.
	ProbeInterval time.Duration `mapstructure:"probe_interval"`

	// ProbeTimeout bounds one probe. Default 5s.
	ProbeTimeout time.Duration `mapstructure:"probe_timeout"`

	// DNSInterval is how often backends with dns: true are resolved
	// again. Default 30s.
	DNSInterval time.Duration `mapstructure:"dns_interval"`

	// Balancer is least_request (the replica with the fewest calls in
	// flight, the default) or round_robin.
	Balancer string `mapstructure:"balancer"`

	// ReconnectBuffer is how long a call waits for a ready replica when
	// none is, as while a plugin restarts. Default 20s, the delay Qlik
	// itself waits before it reconnects; 0 fails such calls at once.
	ReconnectBuffer *time.Duration `mapstructure:"reconnect_buffer"`

	// MaxWaiting is the max number of calls waiting for a replica, or, on
	// a merged engine, for its members' capabilities. Further calls get
	// ResourceExhausted at once. Default 1000.
	MaxWaiting int `mapstructure:"max_waiting"`

	// Replay sends a call again, to another replica or to the same one
	// once it is back, when its replica failed before answering anything.
	// Default true. Replay re-runs a function the plugin may have started:
	// set it false for plugins whose functions have side effects.
	Replay *bool `mapstructure:"replay"`

	// ReplayBuffer bounds the request bytes kept per call for a replay; a
	// call that sends more is not replayed. Default 8MiB.
	ReplayBuffer ByteSize `mapstructure:"replay_buffer"`

	// MaxAttempts bounds the tries of one call, the first included.
	// Default 3.
	MaxAttempts int `mapstructure:"max_attempts"`

	// MaxInFlight bounds the calls open on each replica; more wait for a
	// free one, as calls wait for a ready replica. 0, the default, means
	// no limit.
	MaxInFlight int `mapstructure:"max_in_flight"`

	// Functions overrides request_timeout, replay and max_attempts for
	// single functions, by the name in the plugin's capabilities (case is
	// ignored).
	Functions map[string]*FunctionPolicy `mapstructure:"functions"`

	// AllowClients, when not empty, lists the only clients that may call
	// the engine, by their TLS certificate: its subject common name, one of
	// its DNS or URI subjectAltNames, or "sha256:" and the SHA-256 of its
	// public key (SubjectPublicKeyInfo) in hex, of either case. Other
	// callers get PermissionDenied, and so do plaintext callers, because
	// they have no identity.
	AllowClients []string `mapstructure:"allow_clients"`

	// Scripts governs EvaluateScript, which runs arbitrary R or Python code
	// on the plugin's host: allow (the default), audit (log each script
	// call with its length and SHA-256) or deny (PermissionDenied, and
	// allowScript false in the capabilities Qlik gets).
	Scripts string `mapstructure:"scripts"`

	// AuditText adds the script text to the audit log. Default false.
	AuditText bool `mapstructure:"audit_text"`

	// MaxScriptBytes caps the size of a script; 0, the default, means no
	// cap beyond limits.max_header_list_size.
	MaxScriptBytes ByteSize `mapstructure:"max_script_bytes"`

	// MaxCardinality turns away calls whose common header announces more
	// rows, before any row is read. 0, the default, means no limit.
	MaxCardinality int64 `mapstructure:"max_cardinality"`

	// Merge makes this engine one Qlik analytic connection for the
	// functions of several other engines, named here in order. A merged
	// engine has no backends of its own: its calls go to the member whose
	// function they call, with the member's own function id.
	Merge []string `mapstructure:"merge"`

	// MergePrefix renames a member's function whose name an earlier member
	// already uses; {engine} stands for the member's name. Default
	// "{engine}_", so R's Forecast next to Py's becomes R_Forecast.
	MergePrefix string `mapstructure:"merge_prefix"`

	// MergeScripts is the member that gets the merged engine's
	// EvaluateScript calls. Empty means the merged engine offers no
	// scripts.
	MergeScripts string `mapstructure:"merge_scripts"`
}

// DefaultMergePrefix is the default of merge_prefix.
const DefaultMergePrefix = "{engine}_"

// Script policies.
const (
	ScriptsAllow = "allow"
	ScriptsAudit = "audit"
	ScriptsDeny  = "deny"
)

// FunctionPolicy overrides an engine's call policy for one function. A
// key left out keeps the engine's value.
type FunctionPolicy struct {
	RequestTimeout *time.Duration `mapstructure:"request_timeout"`
	Replay         *bool          `mapstructure:"replay"`
	MaxAttempts    int            `mapstructure:"max_attempts"`
}

// Balancer names.
const (
	BalancerLeastRequest = "least_request"
	BalancerRoundRobin   = "round_robin"
)

// Defaults of an engine.
const (
	DefaultProbeInterval   = 10 * time.Second
	DefaultDNSInterval     = 30 * time.Second
	DefaultProbeTimeout    = 5 * time.Second
	DefaultReconnectBuffer = 20 * time.Second
	DefaultMaxWaiting      = 1000
	DefaultReplayBuffer    = 8 << 20
	DefaultMaxAttempts     = 3
)

// Policy is the call policy of an engine for one function, with the
// function's overrides applied.
type Policy struct {
	RequestTimeout time.Duration
	Replay         bool
	MaxAttempts    int
}

// PolicyFor returns the policy for calls of the named function; "" or an
// unknown name gives the engine's own.
func (e *Engine) PolicyFor(function string) Policy {
	policy := Policy{RequestTimeout: e.RequestTimeout, Replay: e.Replay == nil || *e.Replay, MaxAttempts: e.MaxAttempts}
	override := e.function(function)
	if override == nil {
		return policy
	}
	if override.RequestTimeout != nil {
		policy.RequestTimeout = *override.RequestTimeout
	}
	if override.Replay != nil {
		policy.Replay = *override.Replay
	}
	if override.MaxAttempts > 0 {
		policy.MaxAttempts = override.MaxAttempts
	}
	return policy
}

func (e *Engine) function(name string) *FunctionPolicy {
	if name == "" {
		return nil
	}
	if policy, ok := e.Functions[strings.ToLower(name)]; ok {
		return policy
	}
	for key, policy := range e.Functions {
		if strings.EqualFold(key, name) {
			return policy
		}
	}
	return nil
}

// ReconnectWait returns how long a call waits for a ready replica.
func (e *Engine) ReconnectWait() time.Duration {
	if e.ReconnectBuffer == nil {
		return DefaultReconnectBuffer
	}
	return *e.ReconnectBuffer
}

// Backend is one replica of a plugin.
type Backend struct {
	// Address is the plugin's host:port.
	Address string `mapstructure:"address"`

	// TLS, when set, makes the gateway connect to the plugin over TLS. Nil
	// means plaintext, as for a plugin without a certificate folder.
	TLS *ClientTLS `mapstructure:"tls"`

	// DNS makes every address that the host of Address resolves to a
	// replica, such as the pods behind a Kubernetes headless Service. The
	// name is resolved again every dns_interval of the engine, so scaling
	// the plugin needs no change to the gateway. TLS replicas are verified
	// against the host name, or server_name.
	DNS bool `mapstructure:"dns"`
}

// ServerName is the name the plugin's certificate must carry: the TLS
// server_name when set, otherwise the host of Address, without the
// brackets of an IPv6 literal.
func (b Backend) ServerName() string {
	if b.TLS != nil && b.TLS.ServerName != "" {
		return b.TLS.ServerName
	}
	host, _, err := net.SplitHostPort(b.Address)
	if err != nil {
		return b.Address
	}
	return host
}

// ClientTLS locates what the gateway needs to connect to a TLS plugin:
// either Dir, in the layout Qlik uses for a plugin's certificate folder, or
// explicit files, which take precedence over the folder's.
type ClientTLS struct {
	// Dir holds root_cert.pem, sse_client_cert.pem and sse_client_key.pem.
	Dir string `mapstructure:"dir"`

	CAFile   string `mapstructure:"ca_file"`
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`

	// ServerName is the name verified against the plugin's certificate
	// instead of the host of Address. Certificates made with Qlik's usual
	// script list IP addresses as DNS names, which Go never matches against
	// an IP address; set this to one of the certificate's DNS names then.
	ServerName string `mapstructure:"server_name"`
}

// Limits bounds what one call may carry.
type Limits struct {
	// MaxMessageSize is the largest message, in bytes, accepted from Qlik
	// or from a plugin. Default 16 MiB; Qlik's own receive limit is 4 MiB.
	MaxMessageSize ByteSize `mapstructure:"max_message_size"`

	// MaxHeaderListSize is the largest header block, in bytes, accepted
	// from Qlik or from a plugin. Default 64 KiB. EvaluateScript carries
	// its whole script in a header, so this also bounds script size.
	MaxHeaderListSize ByteSize `mapstructure:"max_header_list_size"`

	// MaxConcurrentStreams bounds the calls open at once on one client
	// connection. Default 1000.
	MaxConcurrentStreams uint32 `mapstructure:"max_concurrent_streams"`

	// MaxConnections bounds the client connections open at once on each
	// listener; more are closed at once, with a warning. Default 1000.
	MaxConnections int `mapstructure:"max_connections"`

	// FirstMessageTimeout ends a call whose client sends neither a message
	// nor its end of input within this time after the call starts.
	// Default 60s; 0 means no limit.
	FirstMessageTimeout *time.Duration `mapstructure:"first_message_timeout"`

	// StreamWindow is the HTTP/2 flow-control window of each call, towards
	// Qlik and towards the plugin: how much a sender may send ahead of
	// what the gateway has passed on. With the engine's replay_buffer,
	// which keeps a call's request until the plugin responds, it bounds
	// the gateway's memory per call, whatever the number of bundles.
	// Default 128 KiB, plenty on a LAN; a plugin across a slow, distant
	// link may need more, since a call moves at most one window per round
	// trip.
	StreamWindow ByteSize `mapstructure:"stream_window"`
}

// Defaults of the limits.
const (
	DefaultMaxConcurrentStreams = 1000
	DefaultMaxConnections       = 1000
	DefaultFirstMessageTimeout  = 60 * time.Second
	DefaultStreamWindow         = 128 << 10
)

// ConnWindow returns the connection's flow-control window for a stream
// window: room for sixteen calls at full speed. gRPC gives the
// connection's window back as data arrives, so it limits speed, not
// memory.
func (l Limits) ConnWindow() ByteSize {
	return 16 * l.StreamWindow
}

// HeaderListCeiling returns the header list size that gRPC itself accepts
// on the gateway's connections, both ways: four times MaxHeaderListSize,
// and at least 1 MiB. Between the two, the gateway fails the call with
// ResourceExhausted and a message naming max_header_list_size.
//
// Over the ceiling, gRPC (grpc-go v1.85 with golang.org/x/net v0.63)
// resets the stream without a status when the block ends in its first
// frame. It closes the connection when the block goes on in CONTINUATION
// frames or one value alone is longer, because HPACK's table belongs to
// the connection: a block that is not decoded leaves every later one
// unreadable. The
// ceiling is well above the limit so that a long script in Qlik's script
// header, or a long traceback in a plugin's status, fails its own call and
// not every call on the connection. It is not higher, as gRPC's default of
// 16 MiB is, because a connection can make the gateway hold that much
// memory while one header block is decoded, and max_connections of them.
func (l Limits) HeaderListCeiling() uint32 {
	return uint32(min(max(4*int64(l.MaxHeaderListSize), minHeaderListCeiling), math.MaxUint32))
}

// minHeaderListCeiling is the least of HeaderListCeiling.
const minHeaderListCeiling = 1 << 20

// FirstMessageWait returns the first_message_timeout in effect.
func (l Limits) FirstMessageWait() time.Duration {
	if l.FirstMessageTimeout == nil {
		return DefaultFirstMessageTimeout
	}
	return *l.FirstMessageTimeout
}

// Keepalive is the HTTP/2 ping policy.
type Keepalive struct {
	// MinPingInterval is the shortest interval between a client's pings
	// that the gateway accepts, also on connections without calls.
	// Default 5s. A client that pings more often three times in a row
	// while the gateway sends it nothing is sent GOAWAY "too_many_pings"
	// and disconnected (grpc-go's rule, as of v1.85).
	MinPingInterval time.Duration `mapstructure:"min_ping_interval"`

	// BackendPingInterval is how often the gateway pings a plugin while
	// calls are open on the connection, to notice a dead connection.
	// Default 5m, which grpc-go servers accept by default; idle
	// connections are never pinged.
	BackendPingInterval time.Duration `mapstructure:"backend_ping_interval"`
}

// Log configures the gateway's structured log.
type Log struct {
	// Level is debug, info, warn or error. Default info.
	Level string `mapstructure:"level"`

	// Format is text or json. Default text.
	Format string `mapstructure:"format"`

	// AccessLog writes one record per call at info level, with the call's
	// engine, function, app, status, sizes and trace id. Default true.
	AccessLog *bool `mapstructure:"access_log"`
}

// AccessLogEnabled reports whether the access log is on.
func (l Log) AccessLogEnabled() bool {
	return l.AccessLog == nil || *l.AccessLog
}
