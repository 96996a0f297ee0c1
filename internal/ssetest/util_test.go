package ssetest

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

// TestWaitForLineWakesOnWrite checks that waitForLine passes the lines
// written before it started, then sleeps until a later Write brings the
// matching line, which arrives in two writes.
func TestWaitForLineWakesOnWrite(t *testing.T) {
	var b SyncBuffer
	b.Write([]byte("first\r\n"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// The rest is written only after match has seen the first line, so
	// waitForLine must wake on a Write to find it.
	sawFirst := make(chan struct{})
	go func() {
		<-sawFirst
		b.Write([]byte("listen"))
		b.Write([]byte("ing on 127.0.0.1:1\nafter\n"))
	}()
	var seen []string
	line, err := b.waitForLine(ctx, nil, func(line string) bool {
		seen = append(seen, line)
		if line == "first" {
			close(sawFirst)
		}
		return line == "listening on 127.0.0.1:1"
	})
	if err != nil {
		t.Fatalf("waitForLine() error = %v, want the line written after the first; lines seen: %q", err, seen)
	}
	if line != "listening on 127.0.0.1:1" {
		t.Errorf("waitForLine() = %q, want %q", line, "listening on 127.0.0.1:1")
	}
	if want := []string{"first", "listening on 127.0.0.1:1"}; !slices.Equal(seen, want) {
		t.Errorf("lines passed to match = %q, want %q: each complete line once, in order", seen, want)
	}
}

// TestWaitForLineEnds checks waitForLine's two ways to give up: at the end
// of ctx it leaves an unfinished line alone, and once stop is closed it
// passes that line too, since nothing more will complete it.
func TestWaitForLineEnds(t *testing.T) {
	tests := []struct {
		name      string
		stopped   bool
		accept    string
		wantLine  string
		wantErr   error
		wantLines []string
	}{
		{name: "context ends", wantErr: context.Canceled, wantLines: []string{"done"}},
		{name: "writer stopped, no match", stopped: true, wantErr: errOutputEnded, wantLines: []string{"done", "partial"}},
		{name: "writer stopped, last line matches", stopped: true, accept: "partial", wantLine: "partial", wantLines: []string{"done", "partial"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b SyncBuffer
			b.Write([]byte("done\npartial"))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var stop chan struct{}
			if tt.stopped {
				stop = make(chan struct{})
				close(stop)
			} else {
				cancel()
			}

			var seen []string
			line, err := b.waitForLine(ctx, stop, func(line string) bool {
				seen = append(seen, line)
				return line == tt.accept
			})
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("waitForLine() error = %v, want %v", err, tt.wantErr)
			}
			if line != tt.wantLine {
				t.Errorf("waitForLine() = %q, want %q", line, tt.wantLine)
			}
			if !slices.Equal(seen, tt.wantLines) {
				t.Errorf("lines passed to match = %q, want %q", seen, tt.wantLines)
			}
		})
	}
}
