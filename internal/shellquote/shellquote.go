// Package shellquote quotes text as one argument of a command that ssegw
// prints for an admin to run.
package shellquote

import (
	"runtime"
	"strings"
)

// Quote returns text as one argument for a shell on the system that
// ssegw runs on, so that a command printed for the admin, with a path
// that contains spaces, works when pasted. Text of only letters, digits
// and common path characters comes back as it is. On Windows the quotes
// are double quotes, which both cmd.exe and PowerShell read, and elsewhere
// they are POSIX shell single quotes.
func Quote(text string) string {
	if runtime.GOOS == "windows" {
		return windowsShellQuote(text)
	}
	return posixShellQuote(text)
}

// posixShellQuote quotes text for a POSIX shell. Inside single quotes
// every character but the single quote is literal, so each single quote
// ends the quotes, is escaped, and starts them again.
func posixShellQuote(text string) string {
	if text != "" && !strings.ContainsFunc(text, func(r rune) bool { return !isShellSafe(r, "_-.,/:+=@%^") }) {
		return text
	}
	return "'" + strings.ReplaceAll(text, "'", `'\''`) + "'"
}

// windowsShellQuote quotes text for cmd.exe and PowerShell. A Windows
// path cannot contain a double quote, so the quotes need no escapes, but
// backslashes before the closing quote are doubled: programs read a
// backslash there as escaping the quote (CommandLineToArgvW's rules).
//
// NOTE: cmd.exe still expands %NAME% inside double quotes, and PowerShell
// expands $name and backquote escapes, so a path with those characters
// may need editing before it is run.
func windowsShellQuote(text string) string {
	if text != "" && !strings.ContainsFunc(text, func(r rune) bool { return !isShellSafe(r, `_-./:\+=@`) }) {
		return text
	}
	trailing := len(text) - len(strings.TrimRight(text, `\`))
	return `"` + text + strings.Repeat(`\`, trailing) + `"`
}

// isShellSafe reports whether r is an ASCII letter or digit, or one of
// the characters in safe.
func isShellSafe(r rune, safe string) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune(safe, r)
}
