// Package bench compares ssegw with a direct connection to an SSE plugin,
// with nginx and HAProxy as gRPC proxies, and with HAProxy as a plain TCP
// relay, in one run on 127.0.0.1.
//
// Every target is started by the benchmark as a process of its own, with
// its own configuration in a temporary folder, in front of one example
// plugin process. The workloads imitate Qlik: many small chart calls,
// large load script calls streamed in both directions at once, and a
// sweep of concurrent streams that also records the target's resident
// memory. Runs are interleaved, round by round over the targets, so that
// drift of the machine's speed during the run affects every target alike.
// The tables give medians over the rounds and each target's ratio to the
// direct connection.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/internal/otlpcount"
	"github.com/ssegw/ssegw/tlsutil"
)

// Workload names, in the order in which a run measures them.
const (
	// WorkloadSmall is many concurrent SumOfRows calls of one small bundle.
	WorkloadSmall = "small"
	// WorkloadLarge is a few concurrent Echo calls of many large bundles,
	// sent and received at the same time.
	WorkloadLarge = "large"
	// WorkloadSweep is small calls at rising concurrency, with the
	// target's resident memory at each level.
	WorkloadSweep = "sweep"
	// WorkloadMemory compares the resident memory of a freshly started
	// target under small calls and under large ones at one concurrency.
	WorkloadMemory = "memory"
)

// AllWorkloads lists every workload, in run order.
var AllWorkloads = []string{WorkloadSmall, WorkloadLarge, WorkloadSweep, WorkloadMemory}

// Names of the memory workload's two halves in the results.
const (
	memorySmall = "memory-small"
	memoryLarge = "memory-large"
)

// Defaults of Options. With them and all seven targets, a full run took four
// to five minutes on a 2-core machine, and one with the Quick values under
// a minute.
const (
	DefaultDuration          = time.Second
	DefaultRounds            = 3
	DefaultCallTimeout       = 10 * time.Second
	DefaultConcurrency       = 64
	DefaultSmallRows         = 10
	DefaultLargeConcurrency  = 4
	DefaultLargeBundles      = 200
	DefaultLargeRows         = 2000
	DefaultMemoryConcurrency = 100
	DefaultMemoryBundles     = 5

	QuickDuration      = 200 * time.Millisecond
	QuickRounds        = 1
	QuickCallTimeout   = 5 * time.Second
	QuickLargeBundles  = 40
	QuickMemoryBundles = 2
)

// DefaultLevels are the concurrency levels of the sweep.
var DefaultLevels = []int{1, 10, 100, 300, 1000}

// Options configure a benchmark run. Zero values take the defaults.
type Options struct {
	// Executable is the ssegw program that runs the plugin (`ssegw
	// plugin`) and the gateways (`ssegw serve`). Empty means the running
	// program.
	Executable string

	// Version is the version of ssegw, for the report.
	Version string

	// Targets and Workloads select what runs; empty means all, and the
	// order of the names does not matter.
	Targets   []string
	Workloads []string

	// Duration is the measuring window of one run; Rounds how often each
	// target runs each workload setting.
	Duration time.Duration
	Rounds   int

	// CallTimeout is every call's deadline. A call that reaches it,
	// stalled or only slow, takes its target out of the rest of the
	// workload.
	CallTimeout time.Duration

	// Concurrency and SmallRows shape the small calls: that many callers,
	// each call one bundle of SmallRows rows.
	Concurrency int
	SmallRows   int

	// LargeConcurrency callers each send LargeBundles bundles of
	// LargeRows rows per call in the large workload.
	LargeConcurrency int
	LargeBundles     int
	LargeRows        int

	// Levels are the sweep's numbers of concurrent callers, one stream
	// each, all on one client connection as from one Qlik engine.
	Levels []int

	// MemoryConcurrency is the number of callers in both halves of the
	// memory workload; its large calls send MemoryBundles bundles of
	// LargeRows rows each.
	MemoryConcurrency int
	MemoryBundles     int

	// AccessLog turns the gateways' access log on, one record per call.
	AccessLog bool

	// Pprof has each gateway serve Go's profiles on its admin listener,
	// whose address the progress output gives, to profile a gateway
	// under the benchmark's load.
	Pprof bool

	// OutDir, when set, receives bench.md and the SVG plots.
	OutDir string

	// Out receives the tables; Progress one line per run. Nil discards.
	Out      io.Writer
	Progress io.Writer
}

// withDefaults fills in zero values and checks the rest.
func (o Options) withDefaults() (Options, error) {
	if o.Executable == "" {
		executable, err := os.Executable()
		if err != nil {
			return o, fmt.Errorf("finding the ssegw program to run the plugin and gateways: %w", err)
		}
		o.Executable = executable
	}
	if len(o.Targets) == 0 {
		o.Targets = AllTargets
	}
	if len(o.Workloads) == 0 {
		o.Workloads = AllWorkloads
	}
	if len(o.Levels) == 0 {
		o.Levels = DefaultLevels
	}
	defaults := []struct {
		value        *int
		defaultValue int
	}{
		{&o.Rounds, DefaultRounds},
		{&o.Concurrency, DefaultConcurrency},
		{&o.SmallRows, DefaultSmallRows},
		{&o.LargeConcurrency, DefaultLargeConcurrency},
		{&o.LargeBundles, DefaultLargeBundles},
		{&o.LargeRows, DefaultLargeRows},
		{&o.MemoryConcurrency, DefaultMemoryConcurrency},
		{&o.MemoryBundles, DefaultMemoryBundles},
	}
	for _, field := range defaults {
		if *field.value == 0 {
			*field.value = field.defaultValue
		}
	}
	if o.Duration == 0 {
		o.Duration = DefaultDuration
	}
	if o.CallTimeout == 0 {
		o.CallTimeout = DefaultCallTimeout
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	return o, o.check()
}

// check reports the first invalid option.
func (o Options) check() error {
	for _, name := range o.Targets {
		if !slices.Contains(AllTargets, name) {
			return fmt.Errorf("unknown target %q; choose from %s", name, strings.Join(AllTargets, ", "))
		}
	}
	for _, name := range o.Workloads {
		if !slices.Contains(AllWorkloads, name) {
			return fmt.Errorf("unknown workload %q; choose from %s", name, strings.Join(AllWorkloads, ", "))
		}
	}
	counts := map[string]int{
		"rounds": o.Rounds, "concurrency": o.Concurrency, "small rows": o.SmallRows,
		"large concurrency": o.LargeConcurrency, "large bundles": o.LargeBundles, "large rows": o.LargeRows,
		"memory concurrency": o.MemoryConcurrency, "memory bundles": o.MemoryBundles,
	}
	for name, count := range counts {
		if count < 0 {
			return fmt.Errorf("invalid %s %d: must not be negative, and 0 takes the default", name, count)
		}
	}
	for _, level := range o.Levels {
		if level <= 0 {
			return fmt.Errorf("invalid sweep level %d: must be positive", level)
		}
	}
	if o.Duration < 0 || o.CallTimeout < 0 {
		return fmt.Errorf("invalid duration %v or call timeout %v: must not be negative, and 0 takes the default", o.Duration, o.CallTimeout)
	}
	return nil
}

// bench is the state of one run.
type bench struct {
	opts    Options
	started time.Time
	// dir is the temporary folder that holds every configuration and
	// certificate of the run.
	dir string

	plugin        *child
	pluginAddress string
	spans         *otlpcount.Receiver
	// targets are the ones that started, in table order; dead names those
	// whose process ended by itself.
	targets []*target
	dead    map[string]bool

	results  *results
	findings []string
	// notes are facts of the run that need no attention, printed after
	// the tables.
	notes   []string
	machine machineInfo
}

// Run starts the plugin and the selected targets, runs the selected
// workloads against them, stops every process it started, and writes the
// report. It returns early, after the same cleanup, when ctx ends.
func Run(ctx context.Context, opts Options) (err error) {
	opts, err = opts.withDefaults()
	if err != nil {
		return err
	}
	b := &bench{opts: opts, started: time.Now(), dead: map[string]bool{}, results: newResults()}
	b.machine = readMachine(opts.Version)

	// Keep every file of the run in one temporary folder.
	b.dir, err = os.MkdirTemp("", "ssegw-bench-")
	if err != nil {
		return fmt.Errorf("making the benchmark's temporary folder: %w", err)
	}
	defer os.RemoveAll(b.dir)

	// Start the plugin, the span receiver and the targets; stop them all
	// however the run ends.
	defer func() {
		if stopErr := b.stopAll(); stopErr != nil {
			err = errors.Join(err, stopErr)
		}
	}()
	if err := b.startAll(ctx); err != nil {
		return err
	}

	// Measure.
	if err := b.runWorkloads(ctx); err != nil {
		return err
	}

	// Stop the targets before reporting, so that the tracing gateway
	// flushes its spans to the receiver on the way out.
	if err := b.stopAll(); err != nil {
		return err
	}
	b.noteSpans()
	return b.report()
}

// startAll starts the plugin, then each target that is installed; a target
// that is missing or fails to start becomes a finding.
func (b *bench) startAll(ctx context.Context) error {
	// The plugin, shared by every target.
	plugin, address, err := startChild(ctx, "plugin", b.opts.Executable,
		[]string{"plugin", "--address", "127.0.0.1:0", "--name", pluginName}, childEnvironment(),
		listeningLine)
	if err != nil {
		return fmt.Errorf("starting the example plugin (%s plugin): %w", b.opts.Executable, err)
	}
	b.plugin, b.pluginAddress = plugin, strings.TrimSpace(address)

	// A certificate set for the mutual TLS gateway, and the OTLP receiver
	// for the traced one.
	var certs tlsutil.Set
	if slices.Contains(b.opts.Targets, TargetSSEGWTLS) {
		certs, err = tlsutil.WriteSet(b.dir, []string{"localhost", "127.0.0.1"}, tlsutil.SetOptions{})
		if err != nil {
			return fmt.Errorf("making certificates for %s: %w", TargetSSEGWTLS, err)
		}
	}
	if slices.Contains(b.opts.Targets, TargetSSEGWTracing) {
		if b.spans, err = otlpcount.Start(); err != nil {
			return err
		}
	}

	// The targets, in table order.
	for _, name := range AllTargets {
		if !slices.Contains(b.opts.Targets, name) {
			continue
		}
		t, err := b.newTarget(name, certs)
		if err != nil {
			b.finding("%s: %v; skipped", name, err)
			continue
		}
		fmt.Fprintf(b.opts.Progress, "starting %s\n", name)
		if err := t.start(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			b.finding("%s: failed to start: %v; skipped", name, err)
			continue
		}
		b.targets = append(b.targets, t)
	}
	if len(b.targets) == 0 {
		return errors.New("no target started; see the messages above")
	}
	return nil
}

// newTarget builds the target called name. It fails when the program the
// target needs is not installed.
func (b *bench) newTarget(name string, certs tlsutil.Set) (*target, error) {
	t := &target{name: name}
	switch name {
	case TargetDirect:
		t.launch = func(context.Context) (*child, string, error) { return nil, b.pluginAddress, nil }
	case TargetSSEGW:
		t.launch = b.launchGateway(name, nil)
	case TargetSSEGWTLS:
		t.tlsDir = certs.QlikDir
		t.launch = b.launchGateway(name, func(cfg *config.Config) {
			cfg.Listeners[0].Insecure = false
			cfg.Listeners[0].TLS = &config.ServerTLS{Dir: certs.GatewayDir}
		})
	case TargetSSEGWTracing:
		t.launch = b.launchGateway(name, func(cfg *config.Config) {
			everyCall := 1.0
			cfg.Telemetry.Traces = config.TraceExport{
				Exporter: config.ExporterOTLP, Endpoint: b.spans.Addr, Insecure: true, SamplerRatio: &everyCall,
			}
		})
	case TargetGoH2Relay, TargetGRPCProxy:
		t.launch = b.launchReference(name)
	case TargetNginx, TargetHAProxy, TargetTCPRelay:
		program := name
		if name == TargetTCPRelay {
			program = "haproxy"
		}
		path, err := findProgram(program)
		if err != nil {
			return nil, fmt.Errorf("not installed (%w)", err)
		}
		switch name {
		case TargetNginx:
			t.launch = b.launchProxy(name, path, nginxTemplate, nginxArgs)
		case TargetHAProxy:
			t.launch = b.launchProxy(name, path, haproxyTemplate, haproxyArgs)
		default:
			t.launch = b.launchProxy(name, path, tcpRelayTemplate, haproxyArgs)
		}
	}
	return t, nil
}

// stopAll stops every target, then the plugin and the span receiver. It
// may be called more than once.
func (b *bench) stopAll() error {
	var errs []error
	for _, t := range b.targets {
		errs = append(errs, t.stop())
	}
	if b.plugin != nil {
		errs = append(errs, b.plugin.stop())
		b.plugin = nil
	}
	if b.spans != nil {
		b.spans.Stop()
	}
	return errors.Join(errs...)
}

// maxStreams returns the most streams the client opens at once on one
// connection, which the proxies must allow.
func (b *bench) maxStreams() int {
	return max(slices.Max(b.opts.Levels), b.opts.Concurrency, b.opts.LargeConcurrency, b.opts.MemoryConcurrency, 128)
}

// finding records something the report must mention, and shows it at once.
func (b *bench) finding(format string, args ...any) {
	text := fmt.Sprintf(format, args...)
	b.findings = append(b.findings, text)
	fmt.Fprintf(b.opts.Progress, "finding: %s\n", text)
}

// noteSpans records how many spans the traced gateway exported: a note
// when every call got its two, a finding when spans went missing.
func (b *bench) noteSpans() {
	if b.spans == nil {
		return
	}
	for _, t := range b.targets {
		if t.name == TargetSSEGWTracing {
			text, missing := spansNote(t.name, b.spans.Spans(), int64(t.calls))
			if missing {
				b.finding("%s", text)
			} else {
				b.notes = append(b.notes, text)
			}
		}
	}
}

// spansNote describes the spans that the OTLP receiver got for calls
// through target, and reports whether some are missing: each call has a
// server span and an attempt's client span, and a replayed call more.
func spansNote(target string, spans, calls int64) (text string, missing bool) {
	text = fmt.Sprintf("%s: the OTLP receiver got %d spans for the %d calls made through it, %.2f per call",
		target, spans, calls, float64(spans)/float64(max(calls, 1)))
	if spans < 2*calls {
		return text + "; every call should have 2 (its server span and its attempt's), so spans were lost", true
	}
	return text, false
}
