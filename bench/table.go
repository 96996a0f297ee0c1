package bench

import (
	"fmt"
	"io"
	"math"
	"strings"
	"unicode/utf8"
)

// table is one result table, written as aligned text for a terminal or as
// Markdown for the docs.
type table struct {
	title string
	// notes are sentences printed under the title.
	notes  []string
	header []string
	rows   [][]string
}

// writeText writes the table with the first column aligned left and the
// others right, as numbers read best.
func (t table) writeText(w io.Writer) error {
	widths := make([]int, len(t.header))
	for _, row := range append([][]string{t.header}, t.rows...) {
		for i, cell := range row {
			widths[i] = max(widths[i], utf8.RuneCountInString(cell))
		}
	}
	var out strings.Builder
	fmt.Fprintf(&out, "%s\n", t.title)
	for _, note := range t.notes {
		fmt.Fprintf(&out, "  %s\n", note)
	}
	for _, row := range append([][]string{t.header}, t.rows...) {
		for i, cell := range row {
			padding := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(cell))
			switch {
			case i == 0:
				out.WriteString("  " + cell + padding)
			default:
				out.WriteString("  " + padding + cell)
			}
		}
		out.WriteString("\n")
	}
	out.WriteString("\n")
	_, err := io.WriteString(w, out.String())
	return err
}

// writeMarkdown writes the table as a level-3 section with a Markdown
// table.
func (t table) writeMarkdown(w io.Writer) error {
	var out strings.Builder
	fmt.Fprintf(&out, "### %s\n\n", t.title)
	for _, note := range t.notes {
		fmt.Fprintf(&out, "%s\n", note)
	}
	if len(t.notes) > 0 {
		out.WriteString("\n")
	}
	out.WriteString("| " + strings.Join(escapeCells(t.header), " | ") + " |\n|")
	for i := range t.header {
		if i == 0 {
			out.WriteString("---|")
		} else {
			out.WriteString("---:|")
		}
	}
	out.WriteString("\n")
	for _, row := range t.rows {
		out.WriteString("| " + strings.Join(escapeCells(row), " | ") + " |\n")
	}
	out.WriteString("\n")
	_, err := io.WriteString(w, out.String())
	return err
}

// escapeCells protects the pipes in cells, which would end a Markdown
// cell.
func escapeCells(cells []string) []string {
	escaped := make([]string, len(cells))
	for i, cell := range cells {
		escaped[i] = strings.ReplaceAll(cell, "|", `\|`)
	}
	return escaped
}

// noValue fills a cell that has no number.
const noValue = "–"

// formatCount formats a rate or count as a whole number with thousands
// separators.
func formatCount(value float64) string {
	if math.IsNaN(value) || math.IsInf(value, 0) {
		return noValue
	}
	digits := fmt.Sprintf("%.0f", math.Abs(value))
	var out strings.Builder
	if value < 0 && digits != "0" {
		out.WriteString("-")
	}
	for i, digit := range digits {
		if i > 0 && (len(digits)-i)%3 == 0 {
			out.WriteString(",")
		}
		out.WriteRune(digit)
	}
	return out.String()
}

// formatMillis formats milliseconds with about three significant digits.
func formatMillis(millis float64) string {
	switch {
	case math.IsNaN(millis):
		return noValue
	case millis < 1:
		return fmt.Sprintf("%.3f", millis)
	case millis < 10:
		return fmt.Sprintf("%.2f", millis)
	case millis < 100:
		return fmt.Sprintf("%.1f", millis)
	}
	return formatCount(millis)
}

// formatMiB formats a memory size in MiB.
func formatMiB(mebibytes float64) string {
	switch {
	case math.IsNaN(mebibytes):
		return noValue
	case mebibytes < 10:
		return fmt.Sprintf("%.1f", mebibytes)
	}
	return formatCount(mebibytes)
}

// formatRatio formats a ratio to the direct connection, such as 0.81×.
func formatRatio(r float64) string {
	if math.IsNaN(r) {
		return noValue
	}
	return fmt.Sprintf("%.2f×", r)
}
