package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/ssegw/ssegw/examples/plugin/example"
	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/sseclient"
	"github.com/ssegw/ssegw/ssepb"
)

// commandReturned starts the line that executeInBackground writes once
// the command has returned.
const commandReturned = "(test) the command returned: "

// executeInBackground runs cmd with ctx in a new goroutine and returns a
// channel that receives its error. When cmd returns, the goroutine writes
// a line starting with commandReturned to output, which is cmd's stdout or
// stderr. A wait there for a line that cmd never printed then ends at once
// instead of at its timeout.
func executeInBackground(ctx context.Context, cmd *cobra.Command, output io.Writer) <-chan error {
	done := make(chan error, 1)
	go func() {
		err := cmd.ExecuteContext(ctx)
		fmt.Fprintf(output, "%s%v\n", commandReturned, err)
		done <- err
	}()
	return done
}

// TestPluginCommandServes runs the hidden plugin command on a free port,
// calls it, and stops it by ending the command's context.
func TestPluginCommandServes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	serveCtx, stop := context.WithCancel(ctx)
	defer stop()
	var out ssetest.SyncBuffer
	cmd := newRootCommand()
	cmd.SetArgs([]string{"plugin", "--address", "127.0.0.1:0", "--name", "from-test"})
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	done := executeInBackground(serveCtx, cmd, &out)

	line := out.WaitForLine(t, `starting with "listening on "`, 10*time.Second, func(line string) bool {
		return strings.HasPrefix(line, "listening on ") || strings.HasPrefix(line, commandReturned)
	})
	address, listening := strings.CutPrefix(line, "listening on ")
	if !listening {
		t.Fatalf("plugin command ended before listening; output:\n%s", out.String())
	}

	// Call it.
	client, err := sseclient.Dial(address, sseclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	capabilities, _, err := client.Capabilities(ctx)
	if err != nil {
		t.Fatalf("GetCapabilities: %v", err)
	}
	if got := capabilities.GetPluginIdentifier(); got != "from-test" {
		t.Errorf("plugin identifier = %q, want from-test", got)
	}
	rows := &ssepb.BundledRows{Rows: []*ssepb.Row{{Duals: []*ssepb.Dual{{NumData: 1}, {NumData: 2}}}}}
	result, err := client.ExecuteFunction(ctx, example.FunctionSumOfRows, &ssepb.CommonRequestHeader{}, []*ssepb.BundledRows{rows})
	if err != nil {
		t.Fatalf("SumOfRows: %v", err)
	}
	if got := result.Rows(); len(got) != 1 || got[0].GetDuals()[0].GetNumData() != 3 {
		t.Errorf("SumOfRows(1, 2) returned %v, want one row of 3", got)
	}

	// Stop it.
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("plugin command returned %v after its context ended, want nil", err)
		}
	case <-ctx.Done():
		t.Fatal("plugin command still runs after its context ended")
	}
}

// TestPluginRejectsMaxMessageSize checks that a --max-message-size that
// would fail every call is rejected before the plugin listens. A plugin
// that serves instead is stopped after 5s.
func TestPluginRejectsMaxMessageSize(t *testing.T) {
	for _, size := range []string{"0", "-1"} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var out ssetest.SyncBuffer
		cmd := newRootCommand()
		cmd.SetArgs([]string{"plugin", "--address", "127.0.0.1:0", "--max-message-size", size})
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		err := cmd.ExecuteContext(ctx)
		cancel()
		output := out.String()
		if err == nil || !strings.Contains(err.Error(), "invalid --max-message-size "+size) {
			t.Errorf("plugin --max-message-size %s error = %v, want one naming the invalid size", size, err)
		}
		if strings.Contains(output, "listening on") {
			t.Errorf("plugin --max-message-size %s output = %q, want no listener", size, output)
		}
	}
}
