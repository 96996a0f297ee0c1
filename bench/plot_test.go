package bench

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
)

// svgSummary is what a test reads back from an SVG document.
type svgSummary struct {
	root   string
	paths  int
	dots   int
	series []string
	texts  []string
}

// parseSVG decodes document as XML, failing the test on any syntax error,
// and summarizes its elements.
func parseSVG(t *testing.T, document []byte) svgSummary {
	t.Helper()
	var summary svgSummary
	decoder := xml.NewDecoder(bytes.NewReader(document))
	decoder.Strict = true
	inText := false
	for {
		token, err := decoder.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("the SVG is not well-formed XML: %v\n%s", err, document)
		}
		switch token := token.(type) {
		case xml.StartElement:
			if summary.root == "" {
				summary.root = token.Name.Local
				if token.Name.Space != "http://www.w3.org/2000/svg" {
					t.Errorf("root element namespace = %q, want the SVG namespace", token.Name.Space)
				}
			}
			switch token.Name.Local {
			case "path":
				summary.paths++
			case "circle":
				summary.dots++
			case "g":
				for _, attr := range token.Attr {
					if attr.Name.Local == "data-series" {
						summary.series = append(summary.series, attr.Value)
					}
				}
			case "text":
				inText = true
			}
		case xml.CharData:
			if inText {
				summary.texts = append(summary.texts, string(token))
			}
		case xml.EndElement:
			inText = false
		}
	}
	return summary
}

func TestPlotIsWellFormedSVG(t *testing.T) {
	plot := linePlot{
		title:   "calls/s <against> concurrent streams & more",
		xLabel:  "concurrent streams",
		yLabel:  "calls/s",
		xValues: []float64{1, 10, 100, 300, 1000},
		series: []plotSeries{
			{name: "direct", values: []float64{4000, 17000, 20000, 21000, 22000}},
			{name: "ssegw", values: []float64{1500, 5000, math.NaN(), 6000, 5500}},
			{name: "nothing", values: []float64{math.NaN(), math.NaN(), math.NaN(), math.NaN(), math.NaN()}},
		},
	}
	var out bytes.Buffer
	if err := plot.writeSVG(&out); err != nil {
		t.Fatal(err)
	}
	document := out.Bytes()
	summary := parseSVG(t, document)

	if summary.root != "svg" {
		t.Errorf("root element = %q, want svg", summary.root)
	}
	if got, want := strings.Join(summary.series, ","), "direct,ssegw,nothing"; got != want {
		t.Errorf("series groups = %s, want %s", got, want)
	}
	if summary.paths != 2 {
		t.Errorf("%d line paths, want 2: one per series with values", summary.paths)
	}
	if summary.dots != 9 {
		t.Errorf("%d dots, want 9: one per value that is not NaN", summary.dots)
	}
	texts := strings.Join(summary.texts, "\n")
	for _, want := range []string{"calls/s <against> concurrent streams & more", "1,000", "300", "direct", "ssegw"} {
		if !strings.Contains(texts, want) {
			t.Errorf("no text %q in the plot; texts:\n%s", want, texts)
		}
	}
	for _, forbidden := range []string{"NaN", "Inf", "href"} {
		if bytes.Contains(document, []byte(forbidden)) {
			t.Errorf("the SVG contains %q", forbidden)
		}
	}
}

func TestPlotBreaksLineAtMissingValue(t *testing.T) {
	plot := linePlot{
		xValues: []float64{1, 10, 100},
		series:  []plotSeries{{name: "gap", values: []float64{1, math.NaN(), 3}}},
	}
	var out bytes.Buffer
	if err := plot.writeSVG(&out); err != nil {
		t.Fatal(err)
	}
	parseSVG(t, out.Bytes())
	start := bytes.Index(out.Bytes(), []byte(` d="`))
	if start < 0 {
		t.Fatalf("no path in the plot:\n%s", out.Bytes())
	}
	path, _, _ := strings.Cut(out.String()[start+4:], `"`)
	if got := strings.Count(path, "M"); got != 2 {
		t.Errorf("path %q has %d moves, want 2: the line restarts after the missing value", path, got)
	}
	if strings.Contains(path, "L") {
		t.Errorf("path %q draws a line across the missing value", path)
	}
}

func TestPlotWithoutValues(t *testing.T) {
	plot := linePlot{title: "empty", xValues: []float64{5}, series: []plotSeries{{name: "none", values: []float64{math.NaN()}}}}
	var out bytes.Buffer
	if err := plot.writeSVG(&out); err != nil {
		t.Fatal(err)
	}
	if summary := parseSVG(t, out.Bytes()); summary.paths != 0 || summary.dots != 0 {
		t.Errorf("a plot without values drew %d paths and %d dots, want none", summary.paths, summary.dots)
	}
}

func TestNiceScale(t *testing.T) {
	tests := []struct {
		largest       float64
		wantMax, step float64
	}{
		{22000, 25000, 5000},
		{0.9, 1, 0.2},
		{130, 150, 50},
		{1, 1, 0.2},
		{0, 1, 0.2},
	}
	for _, tt := range tests {
		gotMax, gotStep := niceScale(tt.largest, 5)
		if math.Abs(gotMax-tt.wantMax) > 1e-9 || math.Abs(gotStep-tt.step) > 1e-9 {
			t.Errorf("niceScale(%v, 5) = %v, %v; want %v, %v", tt.largest, gotMax, gotStep, tt.wantMax, tt.step)
		}
	}
}
