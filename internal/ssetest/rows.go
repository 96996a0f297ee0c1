package ssetest

import (
	"github.com/ssegw/ssegw/ssepb"
)

// NumericBundle returns a bundle of n rows with cols numeric columns; row
// i holds i, i+1, ... so that order and content can be checked.
func NumericBundle(n, cols int) *ssepb.BundledRows {
	bundle := &ssepb.BundledRows{Rows: make([]*ssepb.Row, n)}
	for i := range bundle.Rows {
		row := &ssepb.Row{Duals: make([]*ssepb.Dual, cols)}
		for j := range row.Duals {
			row.Duals[j] = &ssepb.Dual{NumData: float64(i + j)}
		}
		bundle.Rows[i] = row
	}
	return bundle
}

// StringBundle returns a bundle with one row per text, in one string
// column.
func StringBundle(texts ...string) *ssepb.BundledRows {
	bundle := &ssepb.BundledRows{}
	for _, text := range texts {
		bundle.Rows = append(bundle.Rows, &ssepb.Row{Duals: []*ssepb.Dual{{StrData: text}}})
	}
	return bundle
}
