package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ssegw/ssegw/config"
)

// loadableConfig is a valid configuration file.
const loadableConfig = "listeners: [{address: '127.0.0.1:0', insecure: true}]\nengines: {R: {backends: [{address: '127.0.0.1:50055'}]}}\n"

// TestLoadSizeBound checks that Load reads a file of MaxFileSize bytes,
// and rejects one byte more with an error that names the file and the
// bound.
func TestLoadSizeBound(t *testing.T) {
	dir := t.TempDir()

	// Padded with a comment to exactly the bound.
	atBound := filepath.Join(dir, "at-bound.yaml")
	padding := config.MaxFileSize - len(loadableConfig) - len("#\n")
	writeFile(t, atBound, loadableConfig+"#"+strings.Repeat("x", padding)+"\n")
	if _, err := config.Load(atBound, nil); err != nil {
		t.Errorf("Load of a file of MaxFileSize bytes: %v, want it loaded", err)
	}

	// A sparse file, so that the test writes little.
	overBound := filepath.Join(dir, "over-bound.yaml")
	writeFile(t, overBound, loadableConfig)
	if err := os.Truncate(overBound, config.MaxFileSize+1); err != nil {
		t.Fatal(err)
	}
	_, err := config.Load(overBound, nil)
	if err == nil {
		t.Fatalf("Load of a file of MaxFileSize+1 bytes succeeded, want an error")
	}
	for _, want := range []string{overBound, "4MiB"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Load of a file of MaxFileSize+1 bytes: %q, want it to contain %q", err, want)
		}
	}
}

// TestLoadRejectsFolder checks that Load names a folder given as the
// configuration file.
func TestLoadRejectsFolder(t *testing.T) {
	dir := t.TempDir()
	_, err := config.Load(dir, nil)
	if err == nil || !strings.Contains(err.Error(), dir+" is a folder, not a regular file") {
		t.Errorf("Load(%q) = %v, want an error saying it is a folder", dir, err)
	}
}
