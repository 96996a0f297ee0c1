package config

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"

	"github.com/ssegw/ssegw/internal/fswatch"
)

// Watch calls onChange once the file at path has been written, created or
// moved into place and then left alone for a moment, until ctx ends. It
// watches the file's folder, since editors and Kubernetes replace a file
// rather than write it in place. When path is a link, the folder of the
// file it points to is watched too, as edits happen there.
func Watch(ctx context.Context, path string, onChange func()) error {
	absolute, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("watching %s: %w", path, err)
	}
	var target atomic.Pointer[string]
	resolve := func() string {
		resolved, err := filepath.EvalSymlinks(absolute)
		if err != nil {
			resolved = absolute // moved away for a moment, or not a link
		}
		target.Store(&resolved)
		return resolved
	}
	folders := []string{filepath.Dir(absolute)}
	if resolved := resolve(); filepath.Dir(resolved) != folders[0] {
		folders = append(folders, filepath.Dir(resolved))
	}
	relevant := func(name string) bool {
		// A Kubernetes ConfigMap swaps a ..data link next to the file; any
		// change in the folder may be the file's.
		name = filepath.Clean(name)
		return name == absolute || name == *target.Load() || filepath.Base(name) == "..data"
	}
	var watched atomic.Pointer[fswatch.Folders]
	changed := func() {
		// The link may point elsewhere now: watch that folder too. Not
		// from this goroutine, which must go on reading events.
		if resolved := resolve(); watched.Load() != nil {
			go watched.Load().Add(filepath.Dir(resolved))
		}
		onChange()
	}
	f, err := fswatch.Watch(ctx, folders, relevant, changed)
	if err != nil {
		return fmt.Errorf("watching %s: %w", path, err)
	}
	watched.Store(f)
	return nil
}
