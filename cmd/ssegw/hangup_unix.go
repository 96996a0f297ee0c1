//go:build !windows

package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// notifyHangup calls reload on every SIGHUP until ctx ends. After that,
// until stop is called, SIGHUPs are caught and dropped: Go's default
// action for SIGHUP ends the process, which would cut a drain short.
func notifyHangup(ctx context.Context, reload func()) (stop func()) {
	hangups := make(chan os.Signal, 1)
	signal.Notify(hangups, syscall.SIGHUP)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hangups:
				reload()
			}
		}
	}()
	return func() { signal.Stop(hangups) }
}
