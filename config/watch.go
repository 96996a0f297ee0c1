package config

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watchSettle is how long Watch waits after a change for more: editors
// and deployment tools often write a file in several steps.
const watchSettle = 300 * time.Millisecond

// Watch calls onChange once the file at path has been written, created or
// moved into place and then left alone for a moment, until ctx ends. It
// watches the file's folder, since editors and Kubernetes replace a file
// rather than write it in place.
func Watch(ctx context.Context, path string, onChange func()) error {
	watcher, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching %s: %w", path, err)
	}
	absolute, err := filepath.Abs(path)
	if err != nil {
		watcher.Close()
		return fmt.Errorf("watching %s: %w", path, err)
	}
	if err := watcher.Add(filepath.Dir(absolute)); err != nil {
		watcher.Close()
		return fmt.Errorf("watching %s: %w", path, err)
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
				// A Kubernetes ConfigMap swaps a ..data link next to the
				// file; any change in the folder may be the file's.
				if filepath.Clean(event.Name) == absolute || filepath.Base(event.Name) == "..data" {
					settle.Reset(watchSettle)
				}
			case <-watcher.Errors:
			case <-settle.C:
				onChange()
			}
		}
	}()
	return nil
}
