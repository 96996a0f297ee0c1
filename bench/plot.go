package bench

import (
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// linePlot is a line chart with a logarithmic x axis, such as a metric
// against concurrency levels, written as a self-contained SVG file.
type linePlot struct {
	title, xLabel, yLabel string
	// xValues are the positive x positions of every series' values, in
	// ascending order.
	xValues []float64
	series  []plotSeries
}

// plotSeries is one line: a value per x position, NaN where there is none.
type plotSeries struct {
	name   string
	values []float64
}

// Layout of a plot, in SVG user units.
const (
	plotWidth       = 760
	plotHeight      = 440
	plotLeft        = 80  // room for the y tick labels and axis label
	plotRight       = 170 // room for the legend
	plotTop         = 44  // room for the title
	plotBottom      = 56  // room for the x tick labels and axis label
	plotTickCount   = 5
	plotPointRadius = 3.5
)

// plotColors tell the series apart; the palette is Okabe and Ito's, which
// readers with common colour blindness can distinguish.
var plotColors = []string{"#000000", "#0072B2", "#009E73", "#CC79A7", "#D55E00", "#E69F00", "#56B4E9", "#F0E442"}

// writeSVG writes the plot as one SVG document with no external assets.
func (p linePlot) writeSVG(w io.Writer) error {
	var out strings.Builder
	innerWidth := float64(plotWidth - plotLeft - plotRight)
	innerHeight := float64(plotHeight - plotTop - plotBottom)
	yMax, yStep := niceScale(p.maxValue(), plotTickCount)
	xAt := p.xScale(innerWidth)
	yAt := func(value float64) float64 { return plotTop + innerHeight*(1-value/yMax) }

	// The canvas and the title.
	fmt.Fprintf(&out, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		plotWidth, plotHeight, plotWidth, plotHeight)
	fmt.Fprintf(&out, `<rect width="%d" height="%d" fill="#ffffff"/>`+"\n", plotWidth, plotHeight)
	fmt.Fprintf(&out, `<text x="%d" y="24" font-size="15" font-weight="bold">%s</text>`+"\n", plotLeft, escapeXML(p.title))

	// The y grid, its tick labels and the axis label.
	for tick := 0.0; tick <= yMax+yStep/2; tick += yStep {
		y := yAt(tick)
		fmt.Fprintf(&out, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#dddddd"/>`+"\n", plotLeft, y, plotLeft+innerWidth, y)
		fmt.Fprintf(&out, `<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", plotLeft-6, y, escapeXML(formatTick(tick)))
	}
	fmt.Fprintf(&out, `<text transform="translate(18 %.1f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", plotTop+innerHeight/2, escapeXML(p.yLabel))

	// The x ticks, at the x values themselves, and the axis label.
	for _, x := range p.xValues {
		fmt.Fprintf(&out, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%.1f" stroke="#dddddd"/>`+"\n", xAt(x), plotTop, xAt(x), plotTop+innerHeight)
		fmt.Fprintf(&out, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", xAt(x), plotTop+innerHeight+18, escapeXML(formatTick(x)))
	}
	fmt.Fprintf(&out, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", plotLeft+innerWidth/2, plotHeight-12, escapeXML(p.xLabel))
	fmt.Fprintf(&out, `<rect x="%d" y="%d" width="%.1f" height="%.1f" fill="none" stroke="#333333"/>`+"\n", plotLeft, plotTop, innerWidth, innerHeight)

	// One line per series, broken where a value is missing, with a dot at
	// each value, and its legend entry.
	for i, series := range p.series {
		color := plotColors[i%len(plotColors)]
		var path strings.Builder
		var dots strings.Builder
		pen := "M"
		for j, value := range series.values {
			if j >= len(p.xValues) || math.IsNaN(value) {
				pen = "M"
				continue
			}
			fmt.Fprintf(&path, "%s%.1f %.1f ", pen, xAt(p.xValues[j]), yAt(value))
			fmt.Fprintf(&dots, `<circle cx="%.1f" cy="%.1f" r="%.1f" fill="%s"/>`, xAt(p.xValues[j]), yAt(value), plotPointRadius, color)
			pen = "L"
		}
		fmt.Fprintf(&out, `<g data-series="%s">`, escapeXML(series.name))
		if path.Len() > 0 {
			fmt.Fprintf(&out, `<path d="%s" fill="none" stroke="%s" stroke-width="2"/>`, strings.TrimSpace(path.String()), color)
		}
		out.WriteString(dots.String())
		legendY := plotTop + 10 + 20*i
		fmt.Fprintf(&out, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/>`, plotWidth-plotRight+16, legendY, plotWidth-plotRight+40, legendY, color)
		fmt.Fprintf(&out, `<text x="%d" y="%d" dominant-baseline="middle">%s</text>`, plotWidth-plotRight+46, legendY, escapeXML(series.name))
		out.WriteString("</g>\n")
	}
	out.WriteString("</svg>\n")

	if _, err := io.WriteString(w, out.String()); err != nil {
		return fmt.Errorf("writing the plot %q: %w", p.title, err)
	}
	return nil
}

// maxValue returns the largest value of any series, or 0 without values.
func (p linePlot) maxValue() float64 {
	largest := 0.0
	for _, series := range p.series {
		for _, value := range series.values {
			if !math.IsNaN(value) && !math.IsInf(value, 0) {
				largest = max(largest, value)
			}
		}
	}
	return largest
}

// xScale returns the function that places an x value across width, on a
// logarithmic scale from the first x value to the last. A single value
// sits in the middle.
func (p linePlot) xScale(width float64) func(float64) float64 {
	if len(p.xValues) < 2 || p.xValues[0] <= 0 || p.xValues[len(p.xValues)-1] <= p.xValues[0] {
		return func(float64) float64 { return plotLeft + width/2 }
	}
	low := math.Log10(p.xValues[0])
	high := math.Log10(p.xValues[len(p.xValues)-1])
	return func(x float64) float64 {
		return plotLeft + width*(math.Log10(x)-low)/(high-low)
	}
}

// niceScale returns an axis maximum and tick step for values from 0 to
// largest: about ticks steps of 1, 2 or 5 times a power of ten.
func niceScale(largest float64, ticks int) (axisMax, step float64) {
	if largest <= 0 || math.IsNaN(largest) || math.IsInf(largest, 0) {
		return 1, 1.0 / float64(ticks)
	}
	rough := largest / float64(ticks)
	magnitude := math.Pow(10, math.Floor(math.Log10(rough)))
	step = 10 * magnitude
	for _, factor := range []float64{1, 2, 5} {
		if factor*magnitude >= rough {
			step = factor * magnitude
			break
		}
	}
	return math.Ceil(largest/step) * step, step
}

// formatTick formats an axis value briefly: thousands separated, and no
// trailing zeros on fractions.
func formatTick(value float64) string {
	if value >= 1000 {
		return formatCount(value)
	}
	return strconv.FormatFloat(value, 'g', 4, 64)
}

// escapeXML escapes text for an SVG element or attribute.
func escapeXML(text string) string {
	var out strings.Builder
	_ = xml.EscapeText(&out, []byte(text)) // a strings.Builder does not fail
	return out.String()
}
