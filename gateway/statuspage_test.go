package gateway_test

import (
	"bytes"
	"context"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ssegw/ssegw/internal/ssetest"
)

// chromiumPath is where Debian's chromium package installs the browser.
const chromiumPath = "/usr/bin/chromium"

// chromiumTimeout bounds one run of the browser.
const chromiumTimeout = 90 * time.Second

// findChromium returns the browser's path. Without it the test fails on a
// CI machine, where the environment variable CI is set, and is skipped
// elsewhere.
func findChromium(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("headless Chromium is required on CI: %v", err)
		}
		t.Skipf("headless Chromium not found at %s (%v); install it with: apt-get install chromium", chromiumPath, err)
	}
	return chromiumPath
}

// runChromium runs headless Chromium with args after the usual flags, in a
// process group of its own and a new profile folder, and returns what it
// printed on stdout. When it runs longer than chromiumTimeout, or the test
// ends, the whole group is killed: the browser starts helper processes
// that would outlive it otherwise.
func runChromium(t *testing.T, path string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(testContext(t), chromiumTimeout)
	defer cancel()
	flags := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		// Tests reach no address but loopback. Chromium's own DNS client
		// opens sockets to the system's name servers even for a page on
		// 127.0.0.1. Without it, and with every name unresolvable, the
		// browser's only other socket is the UDP one it connects, without
		// sending, to a public address to learn whether IPv6 is routed.
		"--disable-features=AsyncDns", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
		"--user-data-dir=" + t.TempDir(),
	}
	cmd := exec.CommandContext(ctx, path, append(flags, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr

	err := cmd.Run()
	if cmd.Process != nil {
		// Helpers still running after the browser exited are in its group.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if ctx.Err() != nil {
		t.Fatalf("chromium %s: no result within %v; stderr:\n%s", strings.Join(args, " "), chromiumTimeout, stderr.String())
	}
	if err != nil {
		t.Fatalf("chromium %s: %v; stderr:\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes()
}

// artifactDir returns the folder for files that a test keeps for people to
// look at: SSEGW_TEST_ARTIFACTS if set, else test-artifacts in the module
// root, which git ignores.
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("SSEGW_TEST_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(ssetest.ModuleRoot(t), "test-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("creating the test artifact folder: %v", err)
	}
	return dir
}

// TestStatusPageInBrowser loads the status page of a gateway that has
// served calls in headless Chromium. It checks that the rendered page
// shows the engines, the functions and the trace id of the last call, and
// keeps a screenshot as a test artifact.
func TestStatusPageInBrowser(t *testing.T) {
	chromium := findChromium(t)
	s := startStatusPageGateway(t)
	url := "http://" + s.gw.AdminAddr().String() + "/"

	t.Run("rendered DOM", func(t *testing.T) {
		page := parsePage(t, string(runChromium(t, chromium, "--dump-dom", url)))

		if diff := cmp.Diff([]string{"Example", "Offline"}, pageEngines(page)); diff != "" {
			t.Errorf("engine sections (-want +got):\n%s", diff)
		}
		example := pageEngine(page, "Example")
		if example == nil {
			t.Fatal("no engine section for Example")
		}
		var functions []string
		for _, row := range pageTable(example, "functions") {
			functions = append(functions, row[1])
		}
		if diff := cmp.Diff([]string{"Echo", "SumOfRows", "SumOfColumn"}, functions); diff != "" {
			t.Errorf("Example functions (-want +got):\n%s", diff)
		}
		var traceIDs []string
		for _, row := range pageTable(page, "recent") {
			traceIDs = append(traceIDs, row[len(row)-1])
		}
		if !slices.Contains(traceIDs, s.lastTraceID) {
			t.Errorf("trace ids of the recent calls = %q, want them to include %s", traceIDs, s.lastTraceID)
		}
	})

	t.Run("screenshot", func(t *testing.T) {
		path := filepath.Join(artifactDir(t), "status-page.png")
		if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
			t.Fatalf("removing the previous screenshot: %v", err)
		}
		runChromium(t, chromium, "--screenshot="+path, "--window-size=1280,2000", url)

		file, err := os.Open(path)
		if err != nil {
			t.Fatalf("chromium wrote no screenshot: %v", err)
		}
		defer file.Close()
		config, err := png.DecodeConfig(file)
		if err != nil {
			t.Fatalf("screenshot %s is not a PNG image: %v", path, err)
		}
		if config.Width != 1280 || config.Height != 2000 {
			t.Errorf("screenshot size = %dx%d, want 1280x2000", config.Width, config.Height)
		}
		t.Logf("screenshot of the status page: %s", path)
	})
}
