package gateway

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// TestTallyReportsSums checks what an observable counter over a tally
// reports: one sum per attribute set, negative changes included, and the
// sets beyond maxCachedSets summed under otel.metric.overflow.
func TestTallyReportsSums(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer provider.Shutdown(context.Background())

	var m metrics
	var counted tally
	if _, err := provider.Meter("test").Int64ObservableUpDownCounter("counted", metric.WithInt64Callback(counted.observe)); err != nil {
		t.Fatal(err)
	}
	counted.add(&m, setKey{engine: "A"}, 5)
	counted.add(&m, setKey{engine: "A"}, -2)
	counted.add(&m, setKey{engine: "B"}, 1)
	// Fill the tally up to its last free set.
	counted.count.Store(maxCachedSets - 1)
	counted.add(&m, setKey{engine: "C"}, 7)
	counted.add(&m, setKey{engine: "D"}, 10)
	counted.add(&m, setKey{engine: "E"}, 20)
	counted.add(&m, setKey{engine: "C"}, 1)

	var collected metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &collected); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, point := range collected.ScopeMetrics[0].Metrics[0].Data.(metricdata.Sum[int64]).DataPoints {
		if engine, ok := point.Attributes.Value(attrEngine); ok {
			got[engine.AsString()] = point.Value
		} else if overflow, ok := point.Attributes.Value(attribute.Key("otel.metric.overflow")); ok && overflow.AsBool() {
			got["overflow"] = point.Value
		} else {
			t.Errorf("point with attributes %v, want an engine or the overflow", point.Attributes.ToSlice())
		}
	}
	want := map[string]int64{"A": 3, "B": 1, "C": 8, "overflow": 30}
	for key, value := range want {
		if got[key] != value {
			t.Errorf("sum of %s = %d, want %d", key, got[key], value)
		}
	}
	if len(got) != len(want) {
		t.Errorf("sums = %v, want %v", got, want)
	}
}
