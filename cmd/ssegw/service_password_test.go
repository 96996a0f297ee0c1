package main

import (
	"strings"
	"testing"
)

// TestReadPasswordLine checks that readPasswordLine returns the first line
// of its input without the line end, and rejects an empty first line and
// one without a line end within maxPasswordLine.
func TestReadPasswordLine(t *testing.T) {
	valid := []struct {
		name, input, want string
	}{
		{"line end", "secret\n", "secret"},
		{"Windows line end", "secret\r\n", "secret"},
		{"no line end", "secret", "secret"},
		{"second line ignored", "secret\nmore\n", "secret"},
		{"spaces kept", " se cret \n", " se cret "},
	}
	for _, tt := range valid {
		got, err := readPasswordLine(strings.NewReader(tt.input))
		if err != nil || got != tt.want {
			t.Errorf("%s: readPasswordLine(%q) = %q, %v; want %q", tt.name, tt.input, got, err, tt.want)
		}
	}

	invalid := []struct {
		name, input, want string
	}{
		{"empty input", "", "no password on standard input"},
		{"empty line", "\r\n", "no password on standard input"},
		{"no line end within the limit", strings.Repeat("x", maxPasswordLine+1), "longer than any password"},
	}
	for _, tt := range invalid {
		got, err := readPasswordLine(strings.NewReader(tt.input))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: readPasswordLine = %q, %v; want an error containing %q", tt.name, got, err, tt.want)
		}
	}
}
