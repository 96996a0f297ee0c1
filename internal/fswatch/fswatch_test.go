package fswatch_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ssegw/ssegw/internal/fswatch"
)

// watchCalls watches folders and returns a channel that gets a value at
// each call of onChange.
func watchCalls(t *testing.T, folders ...string) <-chan struct{} {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	calls := make(chan struct{}, 16)
	everything := func(string) bool { return true }
	if _, err := fswatch.Watch(ctx, folders, everything, func() { calls <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	return calls
}

// awaitCall waits for the next call of onChange, after the change named by after.
func awaitCall(t *testing.T, calls <-chan struct{}, after string) {
	t.Helper()
	select {
	case <-calls:
	case <-time.After(10 * time.Second):
		t.Fatalf("no change reported within 10s after %s", after)
	}
}

func write(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, path string) {
	t.Helper()
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
}

// TestWatchFolderRenamedIntoPlace checks that a folder moved into the
// watched path is watched from then on: both the move and a later write
// in the new folder are reported.
func TestWatchFolderRenamedIntoPlace(t *testing.T) {
	root := t.TempDir()
	folder := filepath.Join(root, "gateway")
	mkdir(t, folder)
	calls := watchCalls(t, folder)

	write(t, filepath.Join(root, "next-cert.pem"), "beside the folder")
	next := filepath.Join(root, "next")
	mkdir(t, next)
	if err := os.Rename(folder, filepath.Join(root, "gateway.old")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(next, folder); err != nil {
		t.Fatal(err)
	}
	awaitCall(t, calls, "the folder was replaced")

	write(t, filepath.Join(folder, "cert.pem"), "new")
	awaitCall(t, calls, "a write in the folder moved into place")
}

// TestWatchLinkedFolderRepointed checks that when the watched path is a
// link to a folder and the link is pointed at another folder, as
// deployment tools swap versions, writes in the new folder are reported.
func TestWatchLinkedFolderRepointed(t *testing.T) {
	root := t.TempDir()
	v1, v2, live := filepath.Join(root, "v1"), filepath.Join(root, "v2"), filepath.Join(root, "live")
	mkdir(t, v1)
	mkdir(t, v2)
	if err := os.Symlink(v1, live); err != nil {
		t.Fatal(err)
	}
	calls := watchCalls(t, live)

	if err := os.Symlink(v2, live+".tmp"); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(live+".tmp", live); err != nil {
		t.Fatal(err)
	}
	awaitCall(t, calls, "the link was pointed at v2")

	write(t, filepath.Join(v2, "cert.pem"), "new")
	awaitCall(t, calls, "a write in v2")
}

// TestWatchTreeReplacedAbove checks that a folder is watched again when
// a folder above its parent is replaced, as when a whole certificate tree
// is restored from a backup: no watch sees that, so the recheck of the
// folder's path must find it.
func TestWatchTreeReplacedAbove(t *testing.T) {
	fswatch.SetRecheckInterval(t, 20*time.Millisecond)
	root := t.TempDir()
	tree := filepath.Join(root, "certs")
	folder := filepath.Join(tree, "gateway")
	mkdir(t, tree)
	mkdir(t, folder)
	calls := watchCalls(t, folder)

	if err := os.Rename(tree, filepath.Join(root, "certs.old")); err != nil {
		t.Fatal(err)
	}
	mkdir(t, tree)
	mkdir(t, folder)
	awaitCall(t, calls, "the tree above the folder was replaced")

	write(t, filepath.Join(folder, "cert.pem"), "new")
	awaitCall(t, calls, "a write in the new folder")
}
