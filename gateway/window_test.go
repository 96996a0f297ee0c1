package gateway_test

import (
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/internal/ssetest"
)

// TestStreamWindow checks that limits.stream_window is the flow-control
// window the gateway announces both ways: to Qlik as a server, and to
// plugins as a client. A fixed window is what bounds the gateway's memory
// per call; gRPC's default would grow it with the measured bandwidth.
func TestStreamWindow(t *testing.T) {
	const window = 96 << 10

	// A plugin stand-in that reads the gateway's HTTP/2 preface.
	plugin, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { plugin.Close() })
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", nil)},
		Engines:   map[string]*config.Engine{"R": ssetest.Engine(plugin.Addr().String())},
		Limits:    config.Limits{StreamWindow: window},
	})

	// Towards plugins: the client preface of the gateway's two connections
	// to a replica, in the order they arrive. The one for calls announces
	// the window; the one for probes, which carries only GetCapabilities,
	// keeps HTTP/2's default of 65,535 bytes.
	var windows []uint32
	for range 2 {
		backend, err := plugin.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer backend.Close()
		backend.SetDeadline(time.Now().Add(10 * time.Second))
		preface := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(backend, preface); err != nil || string(preface) != http2.ClientPreface {
			t.Fatalf("gateway's client preface = %q, %v", preface, err)
		}
		windows = append(windows, initialWindow(t, http2.NewFramer(io.Discard, backend)))
	}
	slices.Sort(windows)
	if want := []uint32{65535, window}; !slices.Equal(windows, want) {
		t.Errorf("windows announced to plugins = %v, want %v: the calls' connection's and the probes'", windows, want)
	}

	// Towards Qlik: the gateway's server preface.
	client, err := net.Dial("tcp", gw.Addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	client.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(client, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	framer := http2.NewFramer(client, client)
	if err := framer.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	if got := initialWindow(t, framer); got != window {
		t.Errorf("window announced to Qlik = %d, want %d", got, window)
	}
}

// initialWindow reads frames up to the peer's first SETTINGS frame and
// returns its initial window size, or gRPC's default when it names none.
func initialWindow(t *testing.T, framer *http2.Framer) uint32 {
	t.Helper()
	for {
		frame, err := framer.ReadFrame()
		if err != nil {
			t.Fatalf("reading the peer's SETTINGS: %v", err)
		}
		settings, ok := frame.(*http2.SettingsFrame)
		if !ok || settings.IsAck() {
			continue
		}
		if value, ok := settings.Value(http2.SettingInitialWindowSize); ok {
			return value
		}
		return 65535
	}
}
