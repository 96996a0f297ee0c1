package config

import (
	"fmt"
	"strconv"
	"strings"
)

// ByteSize is a size in bytes. In the file it is a plain number of bytes or
// a number with one of the units B, KiB, MiB, GiB (powers of 1024) or KB,
// MB, GB (powers of 1000), such as 16MiB.
type ByteSize int64

var byteUnits = []struct {
	suffix string
	factor int64
}{
	// Longer suffixes first, so that "MiB" is not read as "B".
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9},
	{"B", 1},
}

// ParseByteSize parses a size such as 4194304, 4MiB or 512KB.
func ParseByteSize(text string) (ByteSize, error) {
	text = strings.TrimSpace(text)
	number, factor := text, int64(1)
	for _, unit := range byteUnits {
		if rest, ok := strings.CutSuffix(text, unit.suffix); ok {
			number, factor = strings.TrimSpace(rest), unit.factor
			break
		}
	}
	n, err := strconv.ParseInt(number, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/factor {
		return 0, fmt.Errorf("invalid size %q: write a number of bytes, or a number with a unit such as 16MiB", text)
	}
	return ByteSize(n * factor), nil
}

// String formats the size with the largest binary unit that divides it.
func (s ByteSize) String() string {
	switch {
	case s != 0 && s%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", s>>30)
	case s != 0 && s%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", s>>20)
	case s != 0 && s%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", s>>10)
	}
	return fmt.Sprintf("%dB", int64(s))
}
