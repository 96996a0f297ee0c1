package main

import "context"

// notifyHangup does nothing: Windows has no SIGHUP. The gateway still
// reloads when its configuration file changes.
func notifyHangup(context.Context, func(), func()) (stop func()) { return func() {} }

// ignoreHangup does nothing: Windows has no SIGHUP.
func ignoreHangup() {}
