package main

import (
	"strings"
	"testing"
)

// TestUnknownSubcommand checks that a mistyped subcommand fails with a
// suggestion, while the command alone, or with help, prints its help.
func TestUnknownSubcommand(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"certs", "chek", "x"}, `unknown command "chek" for "ssegw certs"; did you mean check?`},
		{[]string{"certs", "renew"}, `unknown command "renew" for "ssegw certs"; its commands are check, init`},
		{[]string{"chek"}, `unknown command "chek" for "ssegw"`},
	}
	for _, tt := range tests {
		output, err := runCommand(t, tt.args...)
		if err == nil {
			t.Errorf("ssegw %s succeeded, want an error; output:\n%s", strings.Join(tt.args, " "), output)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ssegw %s error = %q, want it to contain %q", strings.Join(tt.args, " "), err, tt.want)
		}
	}

	for _, args := range [][]string{{"certs"}, {"certs", "help"}} {
		output, err := runCommand(t, args...)
		if err != nil {
			t.Errorf("ssegw %s error = %v, want the help", strings.Join(args, " "), err)
		}
		if !strings.Contains(output, "Available Commands:") {
			t.Errorf("ssegw %s output = %q, want the help", strings.Join(args, " "), output)
		}
	}
}
