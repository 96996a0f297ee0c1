package config_test

import (
	"testing"

	"github.com/ssegw/ssegw/config"
)

// TestParseByteSize checks plain numbers, each unit, surrounding spaces
// and the inputs that must be rejected.
func TestParseByteSize(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		want    config.ByteSize
		wantErr bool
	}{
		{name: "plain bytes", text: "4194304", want: 4 << 20},
		{name: "zero", text: "0", want: 0},
		{name: "bytes unit", text: "512B", want: 512},
		{name: "kibibytes", text: "64KiB", want: 64 << 10},
		{name: "mebibytes", text: "16MiB", want: 16 << 20},
		{name: "gibibytes", text: "2GiB", want: 2 << 30},
		{name: "kilobytes", text: "512KB", want: 512_000},
		{name: "megabytes", text: "4MB", want: 4_000_000},
		{name: "gigabytes", text: "1GB", want: 1_000_000_000},
		{name: "spaces around and before unit", text: " 4 MiB ", want: 4 << 20},
		{name: "largest", text: "4294967296GiB", want: 1 << 62},
		{name: "empty", text: "", wantErr: true},
		{name: "unit only", text: "MiB", wantErr: true},
		{name: "negative", text: "-1", wantErr: true},
		{name: "negative with unit", text: "-4MiB", wantErr: true},
		{name: "fraction", text: "1.5MiB", wantErr: true},
		{name: "lower-case unit", text: "16mib", wantErr: true},
		{name: "unknown unit", text: "16TiB", wantErr: true},
		{name: "too large", text: "4294967297GiB", wantErr: true},
		{name: "overflows int64", text: "99999999999999999999", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := config.ParseByteSize(tt.text)
			if tt.wantErr {
				if err == nil {
					t.Errorf("ParseByteSize(%q) = %d, want an error", tt.text, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseByteSize(%q) error: %v", tt.text, err)
			}
			if got != tt.want {
				t.Errorf("ParseByteSize(%q) = %d, want %d", tt.text, got, tt.want)
			}
		})
	}
}

// TestByteSizeString checks that a size is written with the largest binary
// unit that divides it, and that the text parses back to the same size.
func TestByteSizeString(t *testing.T) {
	tests := []struct {
		name string
		size config.ByteSize
		want string
	}{
		{name: "zero", size: 0, want: "0B"},
		{name: "bytes", size: 1000, want: "1000B"},
		{name: "not a whole KiB", size: 1536, want: "1536B"},
		{name: "kibibytes", size: 64 << 10, want: "64KiB"},
		{name: "not a whole MiB", size: 1536 << 10, want: "1536KiB"},
		{name: "mebibytes", size: 16 << 20, want: "16MiB"},
		{name: "decimal megabytes", size: 4_000_000, want: "4000000B"},
		{name: "gibibytes", size: 3 << 30, want: "3GiB"},
		{name: "above GiB", size: 2048 << 30, want: "2048GiB"},
		{name: "negative", size: -4 << 20, want: "-4MiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.size.String()
			if got != tt.want {
				t.Errorf("ByteSize(%d).String() = %q, want %q", int64(tt.size), got, tt.want)
			}
			if tt.size < 0 {
				return // ParseByteSize rejects negative sizes
			}
			back, err := config.ParseByteSize(got)
			if err != nil || back != tt.size {
				t.Errorf("ParseByteSize(%q) = %d, %v, want %d", got, back, err, int64(tt.size))
			}
		})
	}
}
