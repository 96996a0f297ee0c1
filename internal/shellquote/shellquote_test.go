package shellquote

import (
	"os/exec"
	"testing"
)

// TestPOSIXShellQuoteRoundTrip runs each quoted text through /bin/sh and
// checks that the shell passes it on as one argument, unchanged.
func TestPOSIXShellQuoteRoundTrip(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skipf("no sh here: %v", err)
	}
	texts := []string{
		"certs",
		"my dir/certs",
		"it's here",
		`C:\ProgramData\ssegw`,
		"$HOME and `date` and $(date)",
		"a;b|c&d>e<f*g?h[i]~j!k#l",
		"tab\there",
		"",
		"gw.example,a.gw.example",
	}
	for _, text := range texts {
		quoted := posixShellQuote(text)
		// $# counts the arguments that the quoted text became.
		output, err := exec.Command("sh", "-c", `set -- `+quoted+`; printf '%s:%s' "$#" "$1"`).Output()
		if err != nil {
			t.Fatalf("sh -c 'set -- %s': %v", quoted, err)
		}
		if want := "1:" + text; string(output) != want {
			t.Errorf("posixShellQuote(%q) = %s, which sh reads as %q, want %q", text, quoted, output, want)
		}
	}
}

// TestPOSIXShellQuoteLeavesSafeText checks that text which a shell reads
// as it is stays without quotes, so that common commands stay readable.
func TestPOSIXShellQuoteLeavesSafeText(t *testing.T) {
	for _, text := range []string{"certs", "/etc/ssegw/ssegw.yaml", "gw.example,10.0.0.5", "::1"} {
		if got := posixShellQuote(text); got != text {
			t.Errorf("posixShellQuote(%q) = %s, want it unquoted", text, got)
		}
	}
}

// TestWindowsShellQuote checks the double quotes that cmd.exe and
// PowerShell read as one argument. No Windows shell runs here, so the
// expected strings are written out.
func TestWindowsShellQuote(t *testing.T) {
	tests := []struct{ text, want string }{
		{`C:\ProgramData\ssegw\certs`, `C:\ProgramData\ssegw\certs`},
		{`C:\Program Files\ssegw\certs`, `"C:\Program Files\ssegw\certs"`},
		{"gw.example,a.gw.example", `"gw.example,a.gw.example"`},
		{"a&b", `"a&b"`},
		{"", `""`},
		// The closing quote after a backslash must not read as escaped.
		{`\\srv\my share\`, `"\\srv\my share\\"`},
		{`C:\my dir\\`, `"C:\my dir\\\\"`},
	}
	for _, tt := range tests {
		if got := windowsShellQuote(tt.text); got != tt.want {
			t.Errorf("windowsShellQuote(%q) = %s, want %s", tt.text, got, tt.want)
		}
	}
}
