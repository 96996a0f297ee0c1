//go:build !windows

package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// notifyHangup calls reload on every SIGHUP until ctx ends, and ignored on
// every SIGHUP after that, until stop is called. Go's default action for
// SIGHUP ends the process, which would cut a drain short.
func notifyHangup(ctx context.Context, reload, ignored func()) (stop func()) {
	hangups := make(chan os.Signal, 1)
	signal.Notify(hangups, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-hangups:
				if ctx.Err() != nil {
					ignored()
				} else {
					reload()
				}
			}
		}
	}()
	return func() {
		signal.Stop(hangups)
		close(done)
	}
}

// ignoreHangup ignores SIGHUP until notifyHangup takes it over, so that one
// during start-up, before there is anything to reload, does not end the
// process.
func ignoreHangup() {
	signal.Ignore(syscall.SIGHUP)
}
