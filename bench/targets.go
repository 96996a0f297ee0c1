package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"google.golang.org/grpc"

	"github.com/ssegw/ssegw/config"
)

// Target names, in the order in which the tables list them.
const (
	TargetDirect       = "direct"
	TargetSSEGW        = "ssegw"
	TargetSSEGWTLS     = "ssegw-mtls"
	TargetSSEGWTracing = "ssegw-tracing"
	TargetNginx        = "nginx"
	TargetHAProxy      = "haproxy"
	TargetTCPRelay     = "tcp-relay"
	TargetGoH2Relay    = "go-h2-relay"
	TargetGRPCProxy    = "grpc-proxy"
)

// AllTargets lists every target, in table order.
var AllTargets = []string{TargetDirect, TargetSSEGW, TargetSSEGWTLS, TargetSSEGWTracing, TargetNginx, TargetHAProxy, TargetTCPRelay, TargetGoH2Relay, TargetGRPCProxy}

// targetDescriptions describe each target, for the report.
var targetDescriptions = map[string]string{
	TargetDirect:       "the client calls the example plugin itself",
	TargetSSEGW:        "`ssegw serve`, plaintext listener",
	TargetSSEGWTLS:     "`ssegw serve`, mutual TLS towards the client with Qlik's certificate folder",
	TargetSSEGWTracing: "`ssegw serve`, plaintext, every call traced (sampler ratio 1) and exported over OTLP/gRPC to a receiver in the benchmark process",
	TargetNginx:        "nginx `grpc_pass`, 2 workers, upstream keepalive pool",
	TargetHAProxy:      "HAProxy in HTTP/2 mode on both sides, 2 threads",
	TargetTCPRelay:     "HAProxy in TCP mode, 2 threads: a byte pump that reads no HTTP/2, as a reference for what any process between client and plugin costs",
	TargetGoH2Relay:    "`ssegw bench go-h2-relay` (package bench/h2relay), a bare HTTP/2 relay in Go with the gateway's default windows and heap floor. It ends each stream and relays its frames on one of two connections to the plugin, without grpc-go and with none of the gateway's features: a reference for what a Go gateway that relays HTTP/2 frames itself would cost",
	TargetGRPCProxy:    "`ssegw bench grpc-proxy` (package bench/grpcproxy), github.com/mwitkow/grpc-proxy's transparent handler with the gateway's default windows and heap floor. It ends each call on grpc-go and opens one on a grpc-go connection to the plugin, as the gateway does, with none of the gateway's features: a reference for what grpc-go's two sides cost a proxy",
}

// Names of the plugin and the gateway's engine in the benchmark.
const (
	pluginName  = "bench-plugin"
	benchEngine = "Bench"
)

// gatewayDrainTimeout bounds how long a stopping gateway child waits for
// calls in flight. It can be short because the benchmark stops its
// gateways only between runs.
const gatewayDrainTimeout = 2 * time.Second

// checkTimeout bounds the GetCapabilities call that checks a newly
// started target.
const checkTimeout = 30 * time.Second

// target is one way for the client to reach the plugin, with the
// process, if any, that it puts between the two.
type target struct {
	name string
	// launch starts the target's process and returns it with the address
	// that clients call. The process is nil for the direct connection.
	launch func(ctx context.Context) (*child, string, error)
	// tlsDir is Qlik's certificate folder when the client uses mutual TLS.
	tlsDir string

	// process, address and conn belong to the running target, between
	// start and stop.
	process *child
	address string
	conn    *grpc.ClientConn

	// calls counts the calls made through the target, warm-ups included.
	calls int
}

// start launches the target, connects a client and checks the path with
// one GetCapabilities call.
func (t *target) start(ctx context.Context) error {
	process, address, err := t.launch(ctx)
	if err != nil {
		return err
	}
	t.process, t.address = process, address
	conn, err := dial(address, t.tlsDir)
	if err != nil {
		return errors.Join(err, t.stop())
	}
	t.conn = conn
	checkCtx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	if err := checkCapabilities(checkCtx, conn); err != nil {
		return errors.Join(fmt.Errorf("checking %s on %s: %w", t.name, address, err), t.stop())
	}
	return nil
}

// stop closes the client connection and ends the target's process.
func (t *target) stop() error {
	var errs []error
	if t.conn != nil {
		errs = append(errs, t.conn.Close())
		t.conn = nil
	}
	if t.process != nil {
		errs = append(errs, t.process.stop())
		t.process = nil
	}
	return errors.Join(errs...)
}

// restart replaces the target's process with a fresh one, so that a
// memory measurement starts from a new heap.
func (t *target) restart(ctx context.Context) error {
	if err := t.stop(); err != nil {
		return err
	}
	return t.start(ctx)
}

// pid returns the process whose memory counts for the target, or 0 for
// the direct connection.
func (t *target) pid() int {
	if t.process == nil {
		return 0
	}
	return t.process.pid()
}

// exitedProblem describes the target's process having ended by itself, or
// returns "" while it runs.
func (t *target) exitedProblem() string {
	if t.process == nil || !t.process.exited() {
		return ""
	}
	return fmt.Sprintf("exited (%v); its last output:\n%s", t.process.waitErr, t.process.output())
}

// launchGateway returns a launcher of an `ssegw serve` child with its own
// configuration file, in front of the plugin. tune changes the plaintext
// configuration into the variant's.
func (b *bench) launchGateway(name string, tune func(*config.Config)) func(context.Context) (*child, string, error) {
	return func(ctx context.Context) (*child, string, error) {
		// Write the configuration. The access log is off by default,
		// because it writes one record per call, which this process then
		// reads from the pipe: a cost that weighs on small calls and that
		// --access-log measures.
		accessLog := b.opts.AccessLog
		cfg := &config.Config{
			Listeners: []config.Listener{{Address: "127.0.0.1:0", Engine: benchEngine, Insecure: true}},
			Engines: map[string]*config.Engine{
				benchEngine: {Backends: []config.Backend{{Address: b.pluginAddress}}},
			},
			Log: config.Log{Level: "info", Format: "json", AccessLog: &accessLog},
			Telemetry: config.Telemetry{
				Traces:  config.TraceExport{Exporter: config.ExporterNone},
				Metrics: config.MetricExport{Exporter: config.ExporterNone},
			},
			Admin:        config.Admin{Address: "127.0.0.1:0"},
			DrainTimeout: gatewayDrainTimeout,
		}
		if b.opts.Pprof {
			address, err := freeLoopbackAddress()
			if err != nil {
				return nil, "", err
			}
			cfg.Admin = config.Admin{Address: address, Pprof: true}
			fmt.Fprintf(b.opts.Progress, "%s: profiles at http://%s/debug/pprof/\n", name, address)
		}
		if tune != nil {
			tune(cfg)
		}
		data, err := gatewayConfigYAML(cfg)
		if err != nil {
			return nil, "", err
		}
		dir := filepath.Join(b.dir, name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, "", fmt.Errorf("making the folder of %s: %w", name, err)
		}
		file := filepath.Join(dir, "ssegw.yaml")
		if err := os.WriteFile(file, data, 0o600); err != nil {
			return nil, "", fmt.Errorf("writing the configuration of %s: %w", name, err)
		}

		// Start it and read the bound address from its JSON log.
		return startChild(ctx, name, b.opts.Executable, []string{"serve", "--config", file}, childEnvironment(), gatewayListening)
	}
}

// gatewayListening returns the address of a gateway's "listening" log
// record, which it writes for each gRPC listener once it is bound.
func gatewayListening(line string) (string, bool) {
	var record struct {
		Msg     string `json:"msg"`
		Address string `json:"address"`
	}
	if json.Unmarshal([]byte(line), &record) != nil || record.Msg != "listening" || record.Address == "" {
		return "", false
	}
	return record.Address, true
}

// launchReference returns a launcher of a reference target that the
// ssegw binary runs, `ssegw bench NAME`, in front of the plugin.
func (b *bench) launchReference(name string) func(context.Context) (*child, string, error) {
	return func(ctx context.Context) (*child, string, error) {
		args := []string{"bench", name, "--listen", "127.0.0.1:0", "--backend", b.pluginAddress}
		return startChild(ctx, name, b.opts.Executable, args, childEnvironment(), listeningLine)
	}
}

// listeningLine returns the address of the "listening on" line that the
// example plugin and the reference targets print once they are bound.
func listeningLine(line string) (string, bool) {
	return strings.CutPrefix(line, "listening on ")
}

// launchProxy returns a launcher of nginx or HAProxy (program at path) in
// front of the plugin, with its configuration from tmpl in its own folder.
// args returns the command line for the prefix folder and configuration
// file.
func (b *bench) launchProxy(name, path string, tmpl *template.Template, args func(prefix, file string) []string) func(context.Context) (*child, string, error) {
	return func(ctx context.Context) (*child, string, error) {
		// Write the configuration on a port that was free a moment ago,
		// since neither proxy reports a port it chose.
		prefix := filepath.Join(b.dir, name)
		if err := os.MkdirAll(prefix, 0o755); err != nil {
			return nil, "", fmt.Errorf("making the folder of %s: %w", name, err)
		}
		listen, err := freeLoopbackAddress()
		if err != nil {
			return nil, "", err
		}
		data, err := renderProxyConfig(tmpl, proxySettings{
			Prefix: prefix, Listen: listen, Plugin: b.pluginAddress, MaxStreams: b.maxStreams(),
		})
		if err != nil {
			return nil, "", err
		}
		file := filepath.Join(prefix, tmpl.Name())
		if err := os.WriteFile(file, data, 0o644); err != nil {
			return nil, "", fmt.Errorf("writing the configuration of %s: %w", name, err)
		}

		// Start it in the foreground and wait until it accepts connections.
		process, _, err := startChild(ctx, name, path, args(prefix, file), childEnvironment(), nil)
		if err != nil {
			return nil, "", err
		}
		if err := waitForPort(ctx, process, listen); err != nil {
			return nil, "", errors.Join(err, process.stop())
		}
		return process, listen, nil
	}
}

// nginxArgs returns the command line that runs nginx in the foreground,
// with everything in prefix and its log on stderr.
func nginxArgs(prefix, file string) []string {
	return []string{"-p", prefix, "-c", file, "-e", "stderr", "-g", "daemon off;"}
}

// haproxyArgs returns the command line that runs HAProxy in the
// foreground (-db).
func haproxyArgs(_, file string) []string {
	return []string{"-f", file, "-db"}
}

// findProgram returns the path of an installed program: from PATH, or
// from the sbin folders where Debian installs nginx and HAProxy, which a
// user's PATH often leaves out.
func findProgram(name string) (string, error) {
	if path, err := exec.LookPath(name); err == nil {
		return path, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		path := filepath.Join(dir, name)
		if info, err := os.Stat(path); err == nil && !info.IsDir() && info.Mode()&0o111 != 0 {
			return path, nil
		}
	}
	return "", fmt.Errorf("no %s in PATH, /usr/sbin, /usr/local/sbin or /sbin", name)
}
