package telemetry

// NewOTLPSpanExporter lets the external tests compare the gateway's span
// exporter with the SDK's.
var NewOTLPSpanExporter = newOTLPSpanExporter

// DescribeExport lets the external tests check the start-up log's words.
var DescribeExport = describeExport
