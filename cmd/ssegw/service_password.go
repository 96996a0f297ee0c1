package main

import (
	"bufio"
	"errors"
	"io"
	"strings"
)

// maxPasswordLine is the max number of bytes that readPasswordLine reads,
// so that input without a line end cannot grow without bound. Real
// passwords are far shorter.
const maxPasswordLine = 4096

// readPasswordLine returns the first line of r without its line end, for
// service install --password-stdin. It rejects an empty line, and input
// that reaches maxPasswordLine bytes without a line end.
func readPasswordLine(r io.Reader) (string, error) {
	line, err := bufio.NewReader(io.LimitReader(r, maxPasswordLine)).ReadString('\n')
	switch {
	case err == nil:
	case errors.Is(err, io.EOF) && len(line) < maxPasswordLine:
		// The last line needs no line end.
	case errors.Is(err, io.EOF):
		return "", errors.New("the first line of standard input is longer than any password; give the password alone on the first line")
	default:
		return "", err
	}
	password := strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	if password == "" {
		return "", errors.New("no password on standard input; give it on the first line")
	}
	return password, nil
}
