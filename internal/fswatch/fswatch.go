// Package fswatch calls a function when files in some folders change and
// then stay unchanged for a moment.
package fswatch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Settle is how long Watch waits after a change for more: editors,
// deployment tools and certificate renewals often write in several steps.
const Settle = 300 * time.Millisecond

// Folders is the set of folders that a Watch call watches.
type Folders struct {
	watcher *fsnotify.Watcher
}

// Add watches one more folder. It does nothing once Watch's context has
// ended, and watching a folder twice is harmless.
func (f *Folders) Add(folder string) error {
	if err := f.watcher.Add(folder); err != nil && !errors.Is(err, fsnotify.ErrClosed) {
		return fmt.Errorf("%s: %w", folder, err)
	}
	return nil
}

// Watch watches folders, not files, because editors, Kubernetes and
// certificate tools replace a file rather than write it in place. It calls
// onChange once Settle has passed after the last event for which relevant
// returns true, given the event's path, until ctx ends.
func Watch(ctx context.Context, folders []string, relevant func(name string) bool, onChange func()) (*Folders, error) {
	watcher, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	for _, folder := range folders {
		if err := watcher.Add(folder); err != nil {
			watcher.Close()
			return nil, fmt.Errorf("%s: %w", folder, err)
		}
	}
	go func() {
		defer watcher.Close()
		settle := time.NewTimer(time.Hour)
		settle.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case event, ok := <-watcher.Events:
				if !ok {
					return
				}
				if relevant(event.Name) {
					settle.Reset(Settle)
				}
			case <-watcher.Errors:
				// The usual error is an overflowed event queue: events were
				// lost and one of them may have mattered, so act as if it did.
				settle.Reset(Settle)
			case <-settle.C:
				onChange()
			}
		}
	}()
	return &Folders{watcher: watcher}, nil
}
