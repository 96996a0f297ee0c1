package config_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ssegw/ssegw/config"
)

// TestWatchFollowsLinkedFile checks that when the configuration path is a
// link to a file in another folder, an edit of that file is reported, as
// an edit of the path itself is.
func TestWatchFollowsLinkedFile(t *testing.T) {
	root := t.TempDir()
	real := filepath.Join(root, "real", "gw.yaml")
	if err := os.Mkdir(filepath.Dir(real), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(real, []byte("log: {level: info}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(root, "link.yaml")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changed := make(chan struct{}, 4)
	if err := config.Watch(ctx, link, func() { changed <- struct{}{} }); err != nil {
		t.Fatal(err)
	}

	if err := os.WriteFile(real, []byte("log: {level: debug}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("no change reported within 10s of an edit of the linked file")
	}
}
