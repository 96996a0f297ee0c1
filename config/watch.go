package config

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/ssegw/ssegw/internal/fswatch"
)

// Watch calls onChange once the file at path has been written, created or
// moved into place and then left alone for a moment, until ctx ends. It
// watches the file's folder, since editors and Kubernetes replace a file
// rather than write it in place.
func Watch(ctx context.Context, path string, onChange func()) error {
	absolute, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("watching %s: %w", path, err)
	}
	relevant := func(name string) bool {
		// A Kubernetes ConfigMap swaps a ..data link next to the file; any
		// change in the folder may be the file's.
		return filepath.Clean(name) == absolute || filepath.Base(name) == "..data"
	}
	if _, err := fswatch.Watch(ctx, []string{filepath.Dir(absolute)}, relevant, onChange); err != nil {
		return fmt.Errorf("watching %s: %w", path, err)
	}
	return nil
}
