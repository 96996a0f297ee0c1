package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc/codes"

	"github.com/ssegw/ssegw/routing"
)

// Attribute keys of the gateway's spans and metrics, under qlik.sse. next
// to OpenTelemetry's RPC conventions.
const (
	attrEngine         = attribute.Key("qlik.sse.engine")
	attrFunctionID     = attribute.Key("qlik.sse.function.id")
	attrFunctionName   = attribute.Key("qlik.sse.function.name")
	attrFunctionType   = attribute.Key("qlik.sse.function.type")
	attrAppID          = attribute.Key("qlik.sse.app.id")
	attrUserID         = attribute.Key("qlik.sse.user.id")
	attrCardinality    = attribute.Key("qlik.sse.cardinality")
	attrBackend        = attribute.Key("qlik.sse.backend.address")
	attrMessagesIn     = attribute.Key("qlik.sse.messages.in")
	attrMessagesOut    = attribute.Key("qlik.sse.messages.out")
	attrBytesIn        = attribute.Key("qlik.sse.bytes.in")
	attrBytesOut       = attribute.Key("qlik.sse.bytes.out")
	attrRowsIn         = attribute.Key("qlik.sse.rows.in")
	attrRowsOut        = attribute.Key("qlik.sse.rows.out")
	attrWait           = attribute.Key("qlik.sse.replica_wait")
	attrAttempts       = attribute.Key("qlik.sse.attempts")
	attrScriptLength   = attribute.Key("qlik.sse.script.length")
	attrScriptSHA256   = attribute.Key("qlik.sse.script.sha256")
	attrScriptText     = attribute.Key("qlik.sse.script.text")
	attrMethod         = attribute.Key("rpc.method")
	attrStatusCode     = attribute.Key("rpc.grpc.status_code")
	attrDirection      = attribute.Key("direction")
	attrMismatch       = attribute.Key("qlik.sse.mismatch")
	attrMismatchDetail = attribute.Key("qlik.sse.mismatch.detail")
	attrReplica        = attribute.Key("qlik.sse.replica")
	attrReason         = attribute.Key("reason")
	attrAttempt        = attribute.Key("qlik.sse.attempt")
	attrFromCache      = attribute.Key("qlik.sse.capabilities_from_cache")
	attrMember         = attribute.Key("qlik.sse.merge.member")
	// The member's own function id and name, beside the merged engine's
	// in attrFunctionID and attrFunctionName.
	attrMemberFunctionID   = attribute.Key("qlik.sse.merge.member.function.id")
	attrMemberFunctionName = attribute.Key("qlik.sse.merge.member.function.name")
)

// metrics are the gateway's instruments. Their attributes are bounded:
// engines and replicas from the configuration, functions from the plugins'
// capabilities, methods from the SSE service, status codes from gRPC. No
// metric carries an app or user id, a peer address or a raw method.
//
// The counts that every call changes are tallies, which observable
// instruments report. The two instruments that take exemplars stay
// synchronous.
type metrics struct {
	calls      tally
	duration   metric.Float64Histogram
	rows       tally
	bytes      tally
	inFlight   tally
	waiting    tally
	attempts   tally
	mismatches metric.Int64Counter

	// sets caches the attribute sets of the per-call measurements, one
	// per combination. Building a set sorts and copies its attributes,
	// which cost more than the measurement itself on every call.
	sets      sync.Map // setKey → metric.MeasurementOption
	setsCount atomic.Int64
}

// setKey names one attribute set of the per-call measurements.
type setKey struct {
	engine, function, method, direction string
	code                                codes.Code
	hasCode                             bool
}

// maxCachedSets bounds sets. Metric attributes have few values, so the
// bound is only reached if that stops being true, and then each
// measurement builds its own set again.
const maxCachedSets = 10000

// attributes returns the measurement option of key's attribute set.
func (m *metrics) attributes(key setKey) metric.MeasurementOption {
	if option, ok := m.sets.Load(key); ok {
		return option.(metric.MeasurementOption)
	}
	var list []attribute.KeyValue
	if key.engine != "" {
		list = append(list, attrEngine.String(key.engine))
	}
	if key.function != "" {
		list = append(list, attrFunctionName.String(key.function))
	}
	if key.method != "" {
		list = append(list, attrMethod.String(key.method))
	}
	if key.direction != "" {
		list = append(list, attrDirection.String(key.direction))
	}
	if key.hasCode {
		list = append(list, attribute.Int(string(attrStatusCode), int(key.code)))
	}
	option := metric.WithAttributeSet(attribute.NewSet(list...))
	if m.setsCount.Load() < maxCachedSets {
		if _, loaded := m.sets.LoadOrStore(key, option); !loaded {
			m.setsCount.Add(1)
		}
	}
	return option
}

// waitingChanged adds delta to the calls waiting for a replica of engine,
// or for the capabilities of its members when engine is merged.
func (m *metrics) waitingChanged(engine string, delta int64) {
	m.waiting.add(m, setKey{engine: engine}, delta)
}

// tally is a sum by attribute set that the gateway keeps itself and an
// observable instrument reports at each collection. Adding to it is a map
// lookup and an atomic add. The SDK's synchronous instruments checked the
// attribute set and looked it up again on every measurement, about 4 % of
// the gateway's CPU on small calls in profiles, at ten measurements a call.
type tally struct {
	sums  sync.Map // setKey → *tallySum
	count atomic.Int64
	// overflow sums the sets beyond maxCachedSets, reported with the
	// attribute that the OpenTelemetry SDK gives its own overflow.
	overflow atomic.Int64
}

type tallySum struct {
	value  atomic.Int64
	option metric.ObserveOption
}

var overflowAttributes = metric.WithAttributes(attribute.Bool("otel.metric.overflow", true))

func (t *tally) add(m *metrics, key setKey, delta int64) {
	if sum, ok := t.sums.Load(key); ok {
		sum.(*tallySum).value.Add(delta)
		return
	}
	if t.count.Load() >= maxCachedSets {
		t.overflow.Add(delta)
		return
	}
	sum, loaded := t.sums.LoadOrStore(key, &tallySum{option: m.attributes(key)})
	if !loaded {
		t.count.Add(1)
	}
	sum.(*tallySum).value.Add(delta)
}

// forget drops the sum of key while it is 0, so that observe stops
// reporting it.
func (t *tally) forget(key setKey) {
	if sum, ok := t.sums.Load(key); ok && sum.(*tallySum).value.Load() == 0 {
		if _, deleted := t.sums.LoadAndDelete(key); deleted {
			t.count.Add(-1)
		}
	}
}

// observe reports every sum, as an observable instrument's callback.
func (t *tally) observe(_ context.Context, o metric.Int64Observer) error {
	t.sums.Range(func(_, value any) bool {
		sum := value.(*tallySum)
		o.Observe(sum.value.Load(), sum.option)
		return true
	})
	if overflow := t.overflow.Load(); overflow != 0 {
		o.Observe(overflow, overflowAttributes)
	}
	return nil
}

func newMetrics(meter metric.Meter, g *Gateway) (*metrics, error) {
	var (
		m    metrics
		errs []error
		err  error
	)
	collect := func(err error) { errs = append(errs, err) }
	_, err = meter.Int64ObservableCounter("ssegw.calls", metric.WithUnit("{call}"),
		metric.WithDescription("Calls forwarded or rejected, by engine, function, method and status code."),
		metric.WithInt64Callback(m.calls.observe))
	collect(err)
	m.duration, err = meter.Float64Histogram("ssegw.call.duration", metric.WithUnit("s"),
		metric.WithDescription("Time from a call's arrival to its end."),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
	collect(err)
	_, err = meter.Int64ObservableCounter("ssegw.rows", metric.WithUnit("{row}"),
		metric.WithDescription("Rows forwarded, by direction: in from Qlik, out from the plugin."),
		metric.WithInt64Callback(m.rows.observe))
	collect(err)
	_, err = meter.Int64ObservableCounter("ssegw.bytes", metric.WithUnit("By"),
		metric.WithDescription("Message bytes forwarded, by direction."),
		metric.WithInt64Callback(m.bytes.observe))
	collect(err)
	_, err = meter.Int64ObservableUpDownCounter("ssegw.calls.in_flight", metric.WithUnit("{call}"),
		metric.WithDescription("Calls under way."),
		metric.WithInt64Callback(m.inFlight.observe))
	collect(err)
	_, err = meter.Int64ObservableUpDownCounter("ssegw.calls.waiting", metric.WithUnit("{call}"),
		metric.WithDescription("Calls waiting for a plugin replica, or for the capabilities of a merged engine's members."),
		metric.WithInt64Callback(m.waiting.observe))
	collect(err)
	_, err = meter.Int64ObservableCounter("ssegw.call.attempts", metric.WithUnit("{attempt}"),
		metric.WithDescription("Attempts to open a call on a plugin replica."),
		metric.WithInt64Callback(m.attempts.observe))
	collect(err)
	m.mismatches, err = meter.Int64Counter("ssegw.result.mismatches", metric.WithUnit("{call}"),
		metric.WithDescription("Replies whose shape does not fit the function: rows, or table columns."))
	collect(err)

	// Observed from state the gateway keeps anyway.
	_, err = meter.Int64ObservableGauge("ssegw.replica.healthy",
		metric.WithDescription("1 when the replica answered its last probe, or is busy after it did, else 0."),
		metric.WithInt64Callback(g.observeReplicas(func(r routing.ReplicaStatus) bool { return r.State == routing.ReplicaHealthy })))
	collect(err)
	_, err = meter.Int64ObservableGauge("ssegw.replica.busy",
		metric.WithDescription("1 while the replica's probes time out as it serves calls: busy, or hung; else 0."),
		metric.WithInt64Callback(g.observeReplicas(func(r routing.ReplicaStatus) bool { return r.Busy })))
	collect(err)
	_, err = meter.Int64ObservableCounter("ssegw.tls.handshake.failures", metric.WithUnit("{handshake}"),
		metric.WithDescription("Refused TLS handshakes on the listeners, by reason."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			for reason, count := range g.HandshakeFailures() {
				o.Observe(count, metric.WithAttributes(attrReason.String(string(reason))))
			}
			return nil
		}))
	collect(err)
	_, err = meter.Int64ObservableCounter("ssegw.telemetry.errors", metric.WithUnit("{error}"),
		metric.WithDescription("Errors the OpenTelemetry SDK reported, such as exports of spans or metrics the collector did not take, and drops of spans the export queue had no room for."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(g.telemetryErrors.Load())
			return nil
		}))
	collect(err)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("creating metrics: %w", err)
	}
	return &m, nil
}

// observeReplicas returns a gauge callback that observes 1 for each
// replica of every engine whose status satisfies is, else 0.
func (g *Gateway) observeReplicas(is func(routing.ReplicaStatus) bool) metric.Int64Callback {
	return func(_ context.Context, o metric.Int64Observer) error {
		for _, engine := range g.routes().Engines() {
			for _, replica := range engine.Replicas() {
				value := int64(0)
				if is(replica.Status()) {
					value = 1
				}
				o.Observe(value, metric.WithAttributes(attrEngine.String(engine.Name), attrReplica.String(replica.Address)))
			}
		}
		return nil
	}
}
