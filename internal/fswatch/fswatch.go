// Package fswatch calls a function when files in some folders change and
// then stay unchanged for a moment.
package fswatch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Settle is how long Watch waits after a change for more: editors,
// deployment tools and certificate renewals often write in several steps.
const Settle = 300 * time.Millisecond

// recheckInterval is how often Watch compares each folder with what its
// path leads to now. The watch of a folder's parent reports the folder
// replaced, but not a replacement further up: a whole certificate tree
// restored from a backup, or deleted and made again, reaches no watched
// folder. A look at the path finds those.
var recheckInterval = 10 * time.Second

// Folders is the set of folders that a Watch call watches.
type Folders struct {
	watcher *fsnotify.Watcher

	mu      sync.Mutex
	folders map[string]os.FileInfo // the folders asked for, cleaned, with what their path led to when last looked at (nil: nothing)
}

// Add watches one more folder. It does nothing once Watch's context has
// ended, and watching a folder twice is harmless.
//
// The folder's parent is watched too: a watch follows the folder that
// was there when it began, so a folder renamed into place, or a link to a
// folder pointed elsewhere, would otherwise go unseen from then on.
func (f *Folders) Add(folder string) error {
	folder = filepath.Clean(folder)
	// Looked at before the watch begins, so that a replacement between
	// the two shows at the next recheck.
	identity, _ := os.Stat(folder)
	f.mu.Lock()
	f.folders[folder] = identity
	f.mu.Unlock()
	if err := f.watcher.Add(folder); err != nil && !errors.Is(err, fsnotify.ErrClosed) {
		return fmt.Errorf("%s: %w", folder, err)
	}
	// Added again each time, since the parent may have been replaced too.
	// Without its parent, the folder is still watched as it is now.
	if parent := filepath.Dir(folder); parent != folder {
		_ = f.watcher.Add(parent)
	}
	return nil
}

// classify reports what an event at name is: a change in a watched folder,
// the replacement of a watched folder itself, or neither (a change beside
// a folder, seen through the watch of its parent).
func (f *Folders) classify(name string) (inFolder, folderReplaced bool) {
	name = filepath.Clean(name)
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.folders[name]; ok {
		return false, true
	}
	_, inFolder = f.folders[filepath.Dir(name)]
	return inFolder, false
}

// moved returns the folders whose path leads elsewhere than when last
// looked at, or has come or gone since, and notes where each leads now.
func (f *Folders) moved() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var moved []string
	for folder, before := range f.folders {
		now, _ := os.Stat(folder)
		if (before == nil) != (now == nil) || (now != nil && !os.SameFile(before, now)) {
			f.folders[folder] = now
			moved = append(moved, folder)
		}
	}
	return moved
}

// Watch watches folders, not files, because editors, Kubernetes and
// certificate tools replace a file rather than write it in place. It calls
// onChange once Settle has passed after the last event for which relevant
// returns true, given the event's path, or that replaced one of the
// folders, or once a recheck found one replaced, until ctx ends.
func Watch(ctx context.Context, folders []string, relevant func(name string) bool, onChange func()) (*Folders, error) {
	watcher, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	f := &Folders{watcher: watcher, folders: map[string]os.FileInfo{}}
	for _, folder := range folders {
		if err := f.Add(folder); err != nil {
			watcher.Close()
			return nil, err
		}
	}
	recheck := time.NewTicker(recheckInterval)
	go func() {
		defer watcher.Close()
		defer recheck.Stop()
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
				inFolder, replaced := f.classify(event.Name)
				if replaced {
					// Watch what is at the folder's path now. It may be
					// gone for a moment, until the next one moves in. Not
					// from this goroutine: on Windows, fsnotify's Add waits
					// until its events are read.
					go f.Add(event.Name)
					settle.Reset(Settle)
				} else if inFolder && relevant(event.Name) {
					settle.Reset(Settle)
				}
			case <-recheck.C:
				for _, folder := range f.moved() {
					go f.Add(folder)
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
	return f, nil
}
