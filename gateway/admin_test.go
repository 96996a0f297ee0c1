package gateway_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/html"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/examples/plugin/example"
	"github.com/ssegw/ssegw/internal/ssetest"
	"github.com/ssegw/ssegw/routing"
	"github.com/ssegw/ssegw/ssepb"
)

// traceIDPattern matches a W3C trace id as the status page and the log
// show it.
var traceIDPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

// waitForAdmin fetches path until its status code is want, or fails the
// test after timeout. It returns the last body.
func waitForAdmin(t *testing.T, gw *ssetest.Gateway, path string, want int, timeout time.Duration) string {
	t.Helper()
	// The gateway logs no record when a status code changes, so poll.
	deadline := time.Now().Add(timeout)
	for {
		code, _, body := adminGet(t, gw, path)
		if code == want {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s status = %d after %v, want %d; body: %s", path, code, timeout, want, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReadyzWhileDraining checks that /readyz responds with 503 once the
// gateway has begun to stop, so that a load balancer sends no new call
// there, while a call in flight still finishes OK.
func TestReadyzWhileDraining(t *testing.T) {
	t.Parallel()
	plugin := ssetest.StartHoldingPlugin(t, "held", true)
	gw := ssetest.StartGateway(t, reloadConfig(30*time.Second, plugin.Addr))
	_, client := ssetest.DialConn(t, gw.Addrs[0])
	results := make(chan reloadResult, 1)
	go reloadCall(testContext(t), client, results)
	plugin.WaitHeld(t, 1)

	stopped := make(chan error, 1)
	go func() { stopped <- gw.Shutdown(testContext(t)) }()
	if body := waitForAdmin(t, gw, "/readyz", http.StatusServiceUnavailable, 10*time.Second); !strings.Contains(body, "stopping") {
		t.Errorf("GET /readyz body while draining = %q, want it to say the gateway is stopping", body)
	}
	page := fetchStatusPage(t, gw)
	if got := pageText(pageElements(page, func(n *html.Node) bool { return n.Data == "p" })[0]); !strings.HasPrefix(got, "The gateway is stopping") {
		t.Errorf("status page's first paragraph while draining = %q, want it to say the gateway is stopping", got)
	}
	plugin.Release()
	if result := <-results; result.err != nil {
		t.Errorf("call in flight during the drain = %v, want OK", result.err)
	}
	if err := <-stopped; err != nil {
		t.Errorf("Shutdown() = %v, want nil", err)
	}
}

// TestAdminEndpoints checks the status codes and content types of the
// admin listener's paths.
func TestAdminEndpoints(t *testing.T) {
	plugin := ssetest.ServePlugin(t, "127.0.0.1:0", example.NewServer("example-1"))
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("Example", nil)},
		Engines:   map[string]*config.Engine{"Example": ssetest.Engine(plugin.Addr)},
	})

	tests := []struct {
		method          string
		path            string
		wantCode        int
		wantContentType string // media type; empty to skip the check
		wantParams      map[string]string
		wantBody        string // empty to skip the check
	}{
		{method: http.MethodGet, path: "/healthz", wantCode: http.StatusOK, wantBody: "ok\n"},
		{
			method: http.MethodGet, path: "/metrics", wantCode: http.StatusOK,
			wantContentType: "text/plain", wantParams: map[string]string{"version": "0.0.4", "charset": "utf-8"},
		},
		{
			method: http.MethodGet, path: "/", wantCode: http.StatusOK,
			wantContentType: "text/html", wantParams: map[string]string{"charset": "utf-8"},
		},
		{method: http.MethodGet, path: "/nothing-here", wantCode: http.StatusNotFound},
		{method: http.MethodGet, path: "/healthz/more", wantCode: http.StatusNotFound},
		{method: http.MethodGet, path: "/index.html", wantCode: http.StatusNotFound},
		{method: http.MethodPost, path: "/healthz", wantCode: http.StatusMethodNotAllowed},
		{method: http.MethodPost, path: "/metrics", wantCode: http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			req, err := http.NewRequestWithContext(testContext(t), tt.method, "http://"+gw.AdminAddr().String()+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := adminClient.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", tt.method, tt.path, err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("%s %s: reading the body: %v", tt.method, tt.path, err)
			}

			if resp.StatusCode != tt.wantCode {
				t.Errorf("%s %s status = %d, want %d", tt.method, tt.path, resp.StatusCode, tt.wantCode)
			}
			if tt.wantBody != "" && string(body) != tt.wantBody {
				t.Errorf("%s %s body = %q, want %q", tt.method, tt.path, body, tt.wantBody)
			}
			if tt.wantContentType == "" {
				return
			}
			mediaType, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
			if err != nil {
				t.Fatalf("%s %s Content-Type %q: %v", tt.method, tt.path, resp.Header.Get("Content-Type"), err)
			}
			if mediaType != tt.wantContentType {
				t.Errorf("%s %s media type = %q, want %q", tt.method, tt.path, mediaType, tt.wantContentType)
			}
			for key, want := range tt.wantParams {
				if got := params[key]; got != want {
					t.Errorf("%s %s Content-Type parameter %s = %q, want %q", tt.method, tt.path, key, got, want)
				}
			}
		})
	}
}

// TestAdminReadiness checks /readyz. The gateway is ready once every engine
// has a connected replica or known capabilities, and stays ready when the
// only replica stops after a probe learnt its capabilities. It is not
// ready while an engine's only plugin was never reached, and names that
// engine.
func TestAdminReadiness(t *testing.T) {
	t.Run("capabilities known", func(t *testing.T) {
		plugin := ssetest.ServePlugin(t, "127.0.0.1:0", example.NewServer("example-1"))
		engine := ssetest.Engine(plugin.Addr)
		engine.ProbeInterval = 100 * time.Millisecond // to see the plugin stop soon
		gw := ssetest.StartGateway(t, &config.Config{
			Listeners: []config.Listener{ssetest.Listen("Example", nil)},
			Engines:   map[string]*config.Engine{"Example": engine},
		})
		if body := waitForAdmin(t, gw, "/readyz", http.StatusOK, 10*time.Second); body != "ready\n" {
			t.Errorf("GET /readyz body = %q, want %q", body, "ready\n")
		}

		// Once a probe has learnt the capabilities they stay known, so
		// Qlik can still learn the functions from the gateway.
		waitForFunctions(t, gw, "Example", "SumOfRows", 10*time.Second)
		mark := logMark(gw)
		plugin.Server.Stop()
		waitForReplicaState(t, gw, mark, "Example", "failing", 10*time.Second)
		if code, _, body := adminGet(t, gw, "/readyz"); code != http.StatusOK {
			t.Errorf("GET /readyz after the plugin stopped = %d %q, want 200", code, body)
		}
	})

	t.Run("connected without capabilities", func(t *testing.T) {
		// The plugin holds its probe until the gateway gives up, as a plugin
		// still loading its model may, so only its connection is up.
		plugin := ssetest.StartPlugin(t, &ssetest.Connector{
			Capabilities: func(ctx context.Context, _ *ssepb.Empty) (*ssepb.Capabilities, error) {
				<-ctx.Done()
				return nil, ctx.Err()
			},
		})
		engine := ssetest.Engine(plugin.Addr)
		engine.ProbeTimeout = time.Minute
		gw := ssetest.StartGateway(t, &config.Config{
			Listeners: []config.Listener{ssetest.Listen("Loading", nil)},
			Engines:   map[string]*config.Engine{"Loading": engine},
		})
		waitForAdmin(t, gw, "/readyz", http.StatusOK, 10*time.Second)

		// Ready by the connection alone: the capabilities are still unknown.
		section := pageEngine(fetchStatusPage(t, gw), "Loading")
		if section == nil {
			t.Fatal("no engine section for Loading")
		}
		want := [][]string{{"No functions known yet."}}
		if diff := cmp.Diff(want, pageTable(section, "functions")); diff != "" {
			t.Errorf("Loading functions (-want +got):\n%s", diff)
		}
	})

	t.Run("one engine never reached", func(t *testing.T) {
		plugin := ssetest.ServePlugin(t, "127.0.0.1:0", example.NewServer("example-1"))
		gw := ssetest.StartGateway(t, &config.Config{
			Listeners: []config.Listener{ssetest.Listen("Example", nil)},
			Engines: map[string]*config.Engine{
				"Example": ssetest.Engine(plugin.Addr),
				"Offline": ssetest.Engine(ssetest.FreeAddress(t)),
			},
		})
		// A GetCapabilities call through the gateway makes Example's
		// capabilities known before it returns.
		if _, err := ssetest.Dial(t, gw.Addrs[0]).GetCapabilities(testContext(t), &ssepb.Empty{}); err != nil {
			t.Fatalf("GetCapabilities(Example): %v", err)
		}
		waitForReplicaState(t, gw, 0, "Offline", "failing", 10*time.Second)

		code, _, body := adminGet(t, gw, "/readyz")
		if code != http.StatusServiceUnavailable {
			t.Errorf("GET /readyz status = %d, want 503", code)
		}
		if !strings.Contains(body, "Offline") {
			t.Errorf("GET /readyz body = %q, want it to name engine Offline", body)
		}
		if strings.Contains(body, "Example") {
			t.Errorf("GET /readyz body = %q, want it not to name the ready engine Example", body)
		}
	})
}

// waitForPage polls the status page until ready returns true for it, or
// fails the test after timeout, naming what it waited for.
func waitForPage(t *testing.T, gw *ssetest.Gateway, timeout time.Duration, what string, ready func(page *html.Node) bool) {
	t.Helper()
	// Only some changes that the page shows are logged, so poll the page.
	deadline := time.Now().Add(timeout)
	for {
		if ready(fetchStatusPage(t, gw)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("status page after %v: want %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// replicaStateMessages lists, by state, the log records of a replica that
// enters it. The replica logs each such change after it sets the state.
var replicaStateMessages = map[string][]string{
	"failing": {"replica failing", "replica lost its connection"},
	"healthy": {
		"replica healthy",
		"replica healthy: its functions are the engine's again",
		"replica answers GetCapabilities with an error; its functions are unknown",
	},
}

// waitForReplicaState waits for the log record, after the first mark
// records, of a replica of engine that enters state, or fails the test
// after timeout. Take mark with logMark before the action that changes
// the state, or pass 0 for a state that the replica enters only once.
func waitForReplicaState(t *testing.T, gw *ssetest.Gateway, mark int, engine, state string, timeout time.Duration) {
	t.Helper()
	messages, ok := replicaStateMessages[state]
	if !ok {
		t.Fatalf("waitForReplicaState: no log record marks state %q", state)
	}
	waitForRecordAfter(t, gw, mark, timeout, "recording a replica of engine "+engine+" "+state, func(record map[string]any) bool {
		return record["engine"] == engine
	}, messages...)
}

// waitForFunctions polls the status page until engine lists the function
// name, which it does once the engine's capabilities are known.
func waitForFunctions(t *testing.T, gw *ssetest.Gateway, engine, name string, timeout time.Duration) {
	t.Helper()
	waitForPage(t, gw, timeout, "engine "+engine+" listing function "+name, func(page *html.Node) bool {
		section := pageEngine(page, engine)
		if section == nil {
			return false
		}
		for _, row := range pageTable(section, "functions") {
			if len(row) > 1 && row[1] == name {
				return true
			}
		}
		return false
	})
}

// TestAdminOff checks that admin.address "none" starts no admin listener.
func TestAdminOff(t *testing.T) {
	plugin := ssetest.ServePlugin(t, "127.0.0.1:0", example.NewServer("example-1"))
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("Example", nil)},
		Engines:   map[string]*config.Engine{"Example": ssetest.Engine(plugin.Addr)},
		Admin:     config.Admin{Address: "none"},
	})
	if addr := gw.AdminAddr(); addr != nil {
		t.Errorf("AdminAddr() = %v, want nil", addr)
	}
	if records := gw.Logs.Records("admin listening"); len(records) != 0 {
		t.Errorf("log has %d %q records, want 0: %v", len(records), "admin listening", records)
	}

	// The gateway serves calls all the same.
	if _, err := ssetest.Dial(t, gw.Addrs[0]).GetCapabilities(testContext(t), &ssepb.Empty{}); err != nil {
		t.Errorf("GetCapabilities: %v", err)
	}
}

// TestAdminPprof checks that Go's profiles are served only when
// admin.pprof is on.
func TestAdminPprof(t *testing.T) {
	plugin := ssetest.ServePlugin(t, "127.0.0.1:0", example.NewServer("example-1"))
	for _, on := range []bool{false, true} {
		gw := ssetest.StartGateway(t, &config.Config{
			Listeners: []config.Listener{ssetest.Listen("Example", nil)},
			Engines:   map[string]*config.Engine{"Example": ssetest.Engine(plugin.Addr)},
			Admin:     config.Admin{Pprof: on},
		})
		want := http.StatusNotFound
		if on {
			want = http.StatusOK
		}
		for _, path := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/heap"} {
			if code, _, body := adminGet(t, gw, path); code != want {
				t.Errorf("admin.pprof %v: GET %s status = %d, want %d; body:\n%.300s", on, path, code, want, body)
			}
		}
		if !on {
			continue
		}

		// One profile over time at a time: they last as long as they ask,
		// and 64 of them held every admin connection. Profiles of the
		// moment are served meanwhile.
		first := make(chan int, 1)
		startFirst := func() {
			go func() {
				// Not adminGet, whose t.Fatal cannot end the test from here.
				resp, err := adminClient.Get("http://" + gw.AdminAddr().String() + "/debug/pprof/heap?seconds=3")
				if err != nil {
					first <- -1
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				first <- resp.StatusCode
			}()
		}
		startFirst()
		refused := false
		for !refused {
			select {
			case code := <-first:
				if code != http.StatusTooManyRequests {
					t.Fatalf("first profile ended (%d) before a second one was refused", code)
				}
				startFirst() // the second took the place first: again
			default:
			}
			code, _, _ := adminGet(t, gw, "/debug/pprof/heap?seconds=1")
			refused = code == http.StatusTooManyRequests
		}
		if code, _, _ := adminGet(t, gw, "/debug/pprof/goroutine?debug=1"); code != http.StatusOK {
			t.Errorf("profile of the moment beside one over time: status %d, want 200", code)
		}
		if code := <-first; code != http.StatusOK {
			t.Errorf("first profile status = %d, want 200", code)
		}
		if code, _, _ := adminGet(t, gw, "/debug/pprof/heap?seconds=1"); code != http.StatusOK {
			t.Errorf("profile after the first ended: status %d, want 200", code)
		}
	}
}

// fetchStatusPage fetches and parses gw's status page.
func fetchStatusPage(t *testing.T, gw *ssetest.Gateway) *html.Node {
	t.Helper()
	code, _, body := adminGet(t, gw, "/")
	if code != http.StatusOK {
		t.Fatalf("GET / status = %d, want 200; body:\n%s", code, body)
	}
	return parsePage(t, body)
}

// parsePage parses an HTML document.
func parsePage(t *testing.T, document string) *html.Node {
	t.Helper()
	root, err := html.Parse(strings.NewReader(document))
	if err != nil {
		t.Fatalf("parsing the status page: %v", err)
	}
	return root
}

// pageElements returns the elements below root, in document order, for
// which match returns true.
func pageElements(root *html.Node, match func(*html.Node) bool) []*html.Node {
	var found []*html.Node
	for n := range root.Descendants() {
		if n.Type == html.ElementNode && match(n) {
			found = append(found, n)
		}
	}
	return found
}

// pageAttr returns the value of an element's attribute, or "".
func pageAttr(n *html.Node, key string) string {
	for _, attr := range n.Attr {
		if attr.Key == key {
			return attr.Val
		}
	}
	return ""
}

// pageHasClass reports whether an element has class among its classes.
func pageHasClass(n *html.Node, class string) bool {
	return slices.Contains(strings.Fields(pageAttr(n, "class")), class)
}

// pageText returns an element's text with its white space collapsed.
func pageText(n *html.Node) string {
	var b strings.Builder
	for d := range n.Descendants() {
		if d.Type == html.TextNode {
			b.WriteString(d.Data)
		}
	}
	return strings.Join(strings.Fields(b.String()), " ")
}

// pageEngines returns the data-engine names of the page's engine sections,
// in page order.
func pageEngines(root *html.Node) []string {
	var names []string
	for _, section := range pageElements(root, func(n *html.Node) bool { return n.Data == "section" && pageHasClass(n, "engine") }) {
		names = append(names, pageAttr(section, "data-engine"))
	}
	return names
}

// pageEngine returns the section of the named engine, or nil.
func pageEngine(root *html.Node, engine string) *html.Node {
	sections := pageElements(root, func(n *html.Node) bool {
		return n.Data == "section" && pageHasClass(n, "engine") && pageAttr(n, "data-engine") == engine
	})
	if len(sections) != 1 {
		return nil
	}
	return sections[0]
}

// pageTable returns the cell texts of the data rows of the first table
// with class below root, without the header row. It returns nil when no
// such table exists.
func pageTable(root *html.Node, class string) [][]string {
	tables := pageElements(root, func(n *html.Node) bool { return n.Data == "table" && pageHasClass(n, class) })
	if len(tables) == 0 {
		return nil
	}
	rows := [][]string{}
	for _, tr := range pageElements(tables[0], func(n *html.Node) bool { return n.Data == "tr" }) {
		cells := pageElements(tr, func(n *html.Node) bool { return n.Data == "td" })
		if len(cells) == 0 {
			continue // the header row
		}
		var texts []string
		for _, cell := range cells {
			texts = append(texts, pageText(cell))
		}
		rows = append(rows, texts)
	}
	return rows
}

// pageCells returns the cells of the data rows of the first table with
// class below root, as elements, to check their attributes.
func pageCells(root *html.Node, class string) [][]*html.Node {
	tables := pageElements(root, func(n *html.Node) bool { return n.Data == "table" && pageHasClass(n, class) })
	if len(tables) == 0 {
		return nil
	}
	var rows [][]*html.Node
	for _, tr := range pageElements(tables[0], func(n *html.Node) bool { return n.Data == "tr" }) {
		if cells := pageElements(tr, func(n *html.Node) bool { return n.Data == "td" }); len(cells) > 0 {
			rows = append(rows, cells)
		}
	}
	return rows
}

// statusPageGateway is a gateway with an engine Example served by the
// example plugin and an engine Offline whose only plugin is down.
type statusPageGateway struct {
	gw          *ssetest.Gateway
	client      ssepb.ConnectorClient
	exampleAddr string
	offlineAddr string
	requestRows int
	busyApp     string
	quietApp    string
	busyCalls   int
	quietCalls  int
	lastTraceID string
}

// startStatusPageGateway starts the gateway of the status page tests and
// sends it known traffic: one GetCapabilities call to Example, then
// SumOfRows calls of 4 rows, six from app busy-app and then two from app
// quiet-app. It waits until both replicas show their probe results.
func startStatusPageGateway(t *testing.T) *statusPageGateway {
	t.Helper()
	plugin := ssetest.ServePlugin(t, "127.0.0.1:0", example.NewServer("example-1"))
	s := &statusPageGateway{
		exampleAddr: plugin.Addr,
		offlineAddr: ssetest.FreeAddress(t),
		requestRows: 4,
		busyApp:     "busy-app", quietApp: "quiet-app",
		busyCalls: 6, quietCalls: 2,
	}
	audited := ssetest.Engine(s.exampleAddr)
	audited.Scripts = config.ScriptsAudit
	s.gw = ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("", nil)},
		Engines: map[string]*config.Engine{
			"Example": audited,
			"Offline": ssetest.Engine(s.offlineAddr),
		},
	})
	s.client = ssetest.Dial(t, s.gw.Addrs[0])
	ctx := testContext(t)

	if _, err := s.client.GetCapabilities(engineContext(ctx, "Example"), &ssepb.Empty{}); err != nil {
		t.Fatalf("GetCapabilities(Example): %v", err)
	}
	request := encodeBundle(t, ssetest.NumericBundle(s.requestRows, 2))
	call := func(app string) {
		t.Helper()
		out := exchange(qlikContext(t, ctx, "Example", example.FunctionSumOfRows, app, "user"), s.client, request)
		if out.err != io.EOF {
			t.Fatalf("SumOfRows from %s: %v", app, out.err)
		}
	}
	for range s.busyCalls {
		call(s.busyApp)
	}
	for range s.quietCalls {
		call(s.quietApp)
	}
	recent := s.gw.RecentCalls()
	if len(recent) == 0 {
		t.Fatal("RecentCalls() is empty after the calls")
	}
	s.lastTraceID = recent[0].TraceID

	// Neither replica changes state after its first probe, so the first
	// record of the state suffices.
	waitForReplicaState(t, s.gw, 0, "Example", "healthy", 10*time.Second)
	waitForReplicaState(t, s.gw, 0, "Offline", "failing", 10*time.Second)
	return s
}

// TestStatusPageContents checks the status page of a gateway that has
// served calls. It shows each engine with its replicas, their state and
// last probe, and its functions with their signatures and the apps that
// called them lately. It shows calls per second per function and per app,
// busiest first, and the recent calls, newest first, with their trace ids.
func TestStatusPageContents(t *testing.T) {
	s := startStatusPageGateway(t)
	page := fetchStatusPage(t, s.gw)

	if diff := cmp.Diff([]string{"Example", "Offline"}, pageEngines(page)); diff != "" {
		t.Errorf("engine sections (-want +got):\n%s", diff)
	}

	t.Run("engine Example", func(t *testing.T) {
		section := pageEngine(page, "Example")
		if section == nil {
			t.Fatal("no engine section for Example")
		}
		heading := pageText(pageElements(section, func(n *html.Node) bool { return n.Data == "h3" })[0])
		if heading != "Example ready" {
			t.Errorf("Example heading = %q, want %q", heading, "Example ready")
		}
		summary := pageText(pageElements(section, func(n *html.Node) bool { return n.Data == "p" })[0])
		if want := "Scripts: allowed, each call audited."; !strings.Contains(summary, want) {
			t.Errorf("Example summary = %q, want it to contain %q", summary, want)
		}
		replicas := pageTable(section, "replicas")
		if len(replicas) != 1 {
			t.Fatalf("Example replicas = %q, want one row", replicas)
		}
		if got := replicas[0][0]; got != s.exampleAddr {
			t.Errorf("Example replica address = %q, want %q", got, s.exampleAddr)
		}
		if got := replicas[0][1]; got != "healthy" {
			t.Errorf("Example replica state = %q, want healthy", got)
		}
		if got := replicas[0][2]; got == "never" || !strings.HasSuffix(got, "ago") && got != "just now" {
			t.Errorf("Example replica last probe = %q, want a time such as \"just now\" or \"3s ago\"", got)
		}
		if got := replicas[0][3]; got != "" {
			t.Errorf("Example replica last error = %q, want none", got)
		}

		functions := pageTable(section, "functions")
		wantFunctions := [][]string{
			{"0", "Echo", "SCALAR", "Echo(text STRING) STRING", "none"},
			{"1", "SumOfRows", "SCALAR", "SumOfRows(a NUMERIC, b NUMERIC) NUMERIC", s.quietApp + ", " + s.busyApp},
			{"2", "SumOfColumn", "AGGREGATION", "SumOfColumn(column NUMERIC) NUMERIC", "none"},
		}
		if diff := cmp.Diff(wantFunctions, functions); diff != "" {
			t.Errorf("Example functions (-want +got):\n%s", diff)
		}
		// Each app id is in an element of its own that isolates its
		// text direction: one that ends in a right-to-left override would
		// otherwise turn the apps after it around.
		var isolated []string
		for _, n := range pageElements(section, func(n *html.Node) bool { return n.Data == "bdi" }) {
			isolated = append(isolated, pageText(n))
		}
		if want := []string{s.quietApp, s.busyApp}; !slices.Equal(isolated, want) {
			t.Errorf("Example app ids in bdi elements = %q, want %q", isolated, want)
		}
	})

	t.Run("engine Offline", func(t *testing.T) {
		section := pageEngine(page, "Offline")
		if section == nil {
			t.Fatal("no engine section for Offline")
		}
		heading := pageText(pageElements(section, func(n *html.Node) bool { return n.Data == "h3" })[0])
		if heading != "Offline not ready" {
			t.Errorf("Offline heading = %q, want %q", heading, "Offline not ready")
		}
		replicas := pageTable(section, "replicas")
		if len(replicas) != 1 {
			t.Fatalf("Offline replicas = %q, want one row", replicas)
		}
		if got := replicas[0][0]; got != s.offlineAddr {
			t.Errorf("Offline replica address = %q, want %q", got, s.offlineAddr)
		}
		if got := replicas[0][1]; got != "failing" {
			t.Errorf("Offline replica state = %q, want failing", got)
		}
		if got := replicas[0][2]; got == "never" {
			t.Errorf("Offline replica last probe = %q, want the time of the failed probe", got)
		}
		if got := replicas[0][3]; got == "" {
			t.Error("Offline replica last error is empty, want the probe's error")
		}
		wantFunctions := [][]string{{"No functions known yet."}}
		if diff := cmp.Diff(wantFunctions, pageTable(section, "functions")); diff != "" {
			t.Errorf("Offline functions (-want +got):\n%s", diff)
		}
		summary := pageText(pageElements(section, func(n *html.Node) bool { return n.Data == "p" })[0])
		if want := "Scripts: unknown until the plugin answers."; !strings.Contains(summary, want) {
			t.Errorf("Offline summary = %q, want it to contain %q", summary, want)
		}
	})

	t.Run("rates", func(t *testing.T) {
		// Calls per second over the last minute: calls / 60, as %.2f.
		wantRates := [][]string{
			{"Example", "SumOfRows", "0.13"},       // 8 calls
			{"Example", "GetCapabilities", "0.02"}, // 1 call
		}
		if diff := cmp.Diff(wantRates, pageTable(page, "rates")); diff != "" {
			t.Errorf("rates (-want +got):\n%s", diff)
		}

		appRates := pageTable(page, "app-rates")
		var withoutLastCall [][]string
		for _, row := range appRates {
			withoutLastCall = append(withoutLastCall, row[:len(row)-1])
			if last := row[len(row)-1]; last != "just now" && !strings.HasSuffix(last, "s ago") {
				t.Errorf("app-rates row %q last call = %q, want \"just now\" or seconds ago", row, last)
			}
		}
		wantAppRates := [][]string{
			{"Example", "SumOfRows", s.busyApp, "0.10"},  // 6 calls
			{"Example", "SumOfRows", s.quietApp, "0.03"}, // 2 calls
		}
		if diff := cmp.Diff(wantAppRates, withoutLastCall); diff != "" {
			t.Errorf("app-rates without the last call column (-want +got):\n%s", diff)
		}
	})

	t.Run("recent calls", func(t *testing.T) {
		recent := pageTable(page, "recent")
		if want := 1 + s.busyCalls + s.quietCalls; len(recent) != want {
			t.Fatalf("recent calls = %d rows, want %d: %q", len(recent), want, recent)
		}
		// Columns: when, engine, function, app, duration, rows in, rows
		// out, status, trace id.
		newest, oldest := recent[0], recent[len(recent)-1]
		rows := strconv.Itoa(s.requestRows)
		wantNewest := []string{"Example", "SumOfRows", s.quietApp, rows, rows, "OK", s.lastTraceID}
		if diff := cmp.Diff(wantNewest, slices.Concat(newest[1:4], newest[5:])); diff != "" {
			t.Errorf("newest recent call without time and duration (-want +got):\n%s", diff)
		}
		wantOldest := []string{"Example", "GetCapabilities", "", "0", "0", "OK"}
		if diff := cmp.Diff(wantOldest, slices.Concat(oldest[1:4], oldest[5:8])); diff != "" {
			t.Errorf("oldest recent call without time, duration and trace id (-want +got):\n%s", diff)
		}
		for i, row := range recent {
			if d, err := time.ParseDuration(row[4]); err != nil || d <= 0 {
				t.Errorf("recent call %d duration = %q, want a positive duration", i, row[4])
			}
			if !traceIDPattern.MatchString(row[8]) {
				t.Errorf("recent call %d trace id = %q, want 32 hex digits", i, row[8])
			}
		}
		if cells := pageCells(page, "recent"); len(cells) > 0 && !pageHasClass(cells[0][7], "ok") {
			t.Errorf("newest recent call status class = %q, want ok", pageAttr(cells[0][7], "class"))
		}
	})
}

// TestStatusPageMergedEngine checks the section of a merged engine: it
// names its members and lists the functions it offers Qlik, with the apps
// that called each through it. It once read "capabilities unknown" and
// "No functions known yet" while the engine served its members'
// functions. It also checks that a listener shows the default engine that
// a reload gave it, not the one it started with.
func TestStatusPageMergedEngine(t *testing.T) {
	plugin := ssetest.ServePlugin(t, "127.0.0.1:0", example.NewServer("example-1"))
	engines := func(listenerEngine string) *config.Config {
		cfg := &config.Config{
			Listeners: []config.Listener{ssetest.Listen(listenerEngine, nil)},
			Engines: map[string]*config.Engine{
				"Example": ssetest.Engine(plugin.Addr),
				"M":       {Merge: []string{"Example"}, MergeScripts: "Example"},
			},
			Admin: config.Admin{Address: "127.0.0.1:0"},
		}
		cfg.ApplyDefaults()
		return cfg
	}
	gw := ssetest.StartGateway(t, engines("M"))
	client := ssetest.Dial(t, gw.Addrs[0])
	ctx := testContext(t)
	if _, err := client.GetCapabilities(ctx, &ssepb.Empty{}); err != nil {
		t.Fatalf("GetCapabilities(M): %v", err)
	}
	request := encodeBundle(t, ssetest.NumericBundle(2, 2))
	if out := exchange(qlikContext(t, ctx, "M", example.FunctionSumOfRows, "merged-app", "user"), client, request); out.err != io.EOF {
		t.Fatalf("SumOfRows through M: %v", out.err)
	}

	page := fetchStatusPage(t, gw)
	section := pageEngine(page, "M")
	if section == nil {
		t.Fatal("no engine section for M")
	}
	summary := pageText(pageElements(section, func(n *html.Node) bool { return n.Data == "p" })[0])
	for _, want := range []string{"Merges: Example.", "Plugin: ssegw merge of Example, capabilities from", "Scripts: run by Example."} {
		if !strings.Contains(summary, want) {
			t.Errorf("M summary = %q, want it to contain %q", summary, want)
		}
	}
	if strings.Contains(summary, "Request timeout") {
		t.Errorf("M summary = %q, want no request timeout: its members' apply", summary)
	}
	if rows := pageTable(section, "replicas"); rows != nil {
		t.Errorf("M replicas = %q, want no table: a merged engine has none", rows)
	}
	wantFunctions := [][]string{
		{"0", "Echo", "SCALAR", "Echo(text STRING) STRING", "none"},
		{"1", "SumOfRows", "SCALAR", "SumOfRows(a NUMERIC, b NUMERIC) NUMERIC", "merged-app"},
		{"2", "SumOfColumn", "AGGREGATION", "SumOfColumn(column NUMERIC) NUMERIC", "none"},
	}
	if diff := cmp.Diff(wantFunctions, pageTable(section, "functions")); diff != "" {
		t.Errorf("M functions (-want +got):\n%s", diff)
	}

	// The merged engine's own scripts policy comes first.
	denied := engines("M")
	denied.Engines["M"].Scripts = config.ScriptsDeny
	reloadApply(t, gw, denied)
	summary = pageText(pageElements(pageEngine(fetchStatusPage(t, gw), "M"), func(n *html.Node) bool { return n.Data == "p" })[0])
	if want := "Scripts: denied by the gateway."; !strings.Contains(summary, want) {
		t.Errorf("M summary with scripts: deny = %q, want it to contain %q", summary, want)
	}

	reloadApply(t, gw, engines("Example"))
	listeners := pageText(pageElements(fetchStatusPage(t, gw), func(n *html.Node) bool { return n.Data == "p" })[0])
	if want := fmt.Sprintf("%s (plaintext, Example)", gw.Addrs[0]); !strings.Contains(listeners, want) {
		t.Errorf("listeners after the reload = %q, want it to contain %q", listeners, want)
	}
}

// TestStatusPageEngineWithoutIdentifier checks the section of an engine
// whose plugin names itself with no identifier or version: its
// capabilities are known. The page once said "capabilities unknown" and
// "Scripts: unknown" beside the functions it listed.
func TestStatusPageEngineWithoutIdentifier(t *testing.T) {
	plugin := ssetest.StartPlugin(t, &ssetest.Connector{
		Capabilities: func(context.Context, *ssepb.Empty) (*ssepb.Capabilities, error) {
			return &ssepb.Capabilities{AllowScript: true, Functions: []*ssepb.FunctionDefinition{{FunctionId: 0, Name: "F"}}}, nil
		},
	})
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", nil)},
		Engines:   map[string]*config.Engine{"R": ssetest.Engine(plugin.Addr)},
	})
	waitForFunctions(t, gw, "R", "F", 10*time.Second)
	section := pageEngine(fetchStatusPage(t, gw), "R")
	summary := pageText(pageElements(section, func(n *html.Node) bool { return n.Data == "p" })[0])
	for _, want := range []string{"Plugin: no identifier, capabilities from", "Scripts: allowed."} {
		if !strings.Contains(summary, want) {
			t.Errorf("R summary = %q, want it to contain %q", summary, want)
		}
	}
}

// TestStatusPageLeavesOutRejectedApps checks that the app id of a call
// that admission rejects appears nowhere on the status page, neither in
// the recent calls, the app rates nor the apps of the function. Otherwise
// a rejected client could fill the page with app ids of its choosing and
// push out the apps that really called.
func TestStatusPageLeavesOutRejectedApps(t *testing.T) {
	const app = "rejected-app"
	tests := []struct {
		name     string
		tune     func(*config.Engine)
		headers  func(*testing.T) metadata.MD
		wantCode codes.Code
	}{
		{
			name:     "client not in allow_clients",
			tune:     func(engine *config.Engine) { engine.AllowClients = []string{"qlik-prod"} },
			headers:  func(t *testing.T) metadata.MD { return rejectedAppHeaders(t, app, 1) },
			wantCode: codes.PermissionDenied,
		},
		{
			name:     "over max_cardinality",
			tune:     func(engine *config.Engine) { engine.MaxCardinality = 10 },
			headers:  func(t *testing.T) metadata.MD { return rejectedAppHeaders(t, app, 11) },
			wantCode: codes.ResourceExhausted,
		},
		{
			name: "function header sent twice",
			headers: func(t *testing.T) metadata.MD {
				md := rejectedAppHeaders(t, app, 1)
				md.Append(ssepb.FunctionRequestHeaderKey, md.Get(ssepb.FunctionRequestHeaderKey)[0])
				return md
			},
			wantCode: codes.InvalidArgument,
		},
	}
	plugin := startSecPlugin(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			engine := ssetest.Engine(plugin.Addr)
			if tt.tune != nil {
				tt.tune(engine)
			}
			gw := ssetest.StartGateway(t, &config.Config{
				Listeners: []config.Listener{ssetest.Listen("R", nil)},
				Engines:   map[string]*config.Engine{"R": engine},
			})
			waitForFunctions(t, gw, "R", "Echo", 10*time.Second)

			_, err := secStream(testContext(t), ssetest.Dial(t, gw.Addrs[0]).ExecuteFunction, tt.headers(t), ssetest.NumericBundle(1, 1))
			secCheckStatus(t, "ExecuteFunction()", err, tt.wantCode)

			recent := gw.RecentCalls()
			if len(recent) == 0 {
				t.Fatal("RecentCalls() is empty after the rejected call")
			}
			if recent[0].Code != tt.wantCode {
				t.Errorf("RecentCalls()[0].Code = %v, want %v", recent[0].Code, tt.wantCode)
			}
			if recent[0].App != "" {
				t.Errorf("RecentCalls()[0].App = %q, want none", recent[0].App)
			}
			page := fetchStatusPage(t, gw)
			wantAppRates := [][]string{{"No calls from identified apps yet."}}
			if diff := cmp.Diff(wantAppRates, pageTable(page, "app-rates")); diff != "" {
				t.Errorf("app-rates (-want +got):\n%s", diff)
			}
			for _, row := range pageTable(pageEngine(page, "R"), "functions") {
				if apps := row[len(row)-1]; apps != "none" {
					t.Errorf("function %s apps that called it lately = %q, want none", row[1], apps)
				}
			}
		})
	}
}

// rejectedAppHeaders returns the headers of an ExecuteFunction call of
// function 0 from app that announces cardinality rows.
func rejectedAppHeaders(t *testing.T, app string, cardinality int64) metadata.MD {
	t.Helper()
	md, err := ssepb.FunctionCallMetadata(0, &ssepb.CommonRequestHeader{AppId: app, UserId: "user", Cardinality: cardinality})
	if err != nil {
		t.Fatal(err)
	}
	return md
}

// TestStatusPageNamesUnroutedCalls checks that a call that no engine takes
// shows engine "none" among the recent calls, as in the log, rather than
// an empty cell.
func TestStatusPageNamesUnroutedCalls(t *testing.T) {
	plugin := startSecPlugin(t)
	gw := ssetest.StartGateway(t, &config.Config{
		Listeners: []config.Listener{ssetest.Listen("R", nil)},
		Engines:   map[string]*config.Engine{"R": ssetest.Engine(plugin.Addr)},
	})
	headers := rejectedAppHeaders(t, "some-app", 1)
	headers.Set(routing.EngineHeader, "Nope")
	_, err := secStream(testContext(t), ssetest.Dial(t, gw.Addrs[0]).ExecuteFunction, headers, ssetest.NumericBundle(1, 1))
	secCheckStatus(t, "ExecuteFunction()", err, codes.NotFound)

	recent := pageTable(fetchStatusPage(t, gw), "recent")
	if len(recent) != 1 {
		t.Fatalf("recent calls = %q, want one row", recent)
	}
	if got := recent[0][1:3]; !slices.Equal(got, []string{"none", "unknown"}) {
		t.Errorf("recent call engine and function = %q, want [none unknown]", got)
	}
}

// TestAdminConnectionLimit checks that the admin listener closes at once a
// connection beyond the 64 it takes, with a warning, while Qlik's listener
// still serves, and serves again once its connections are gone.
func TestAdminConnectionLimit(t *testing.T) {
	t.Parallel()
	plugin := ssetest.StartHoldingPlugin(t, "p", false)
	gw := ssetest.StartGateway(t, reloadConfig(30*time.Second, plugin.Addr))
	admin := gw.AdminAddr().String()
	const limit = 64
	silent := make([]net.Conn, 0, limit)
	defer func() {
		for _, conn := range silent {
			conn.Close()
		}
	}()
	for range limit {
		conn, err := net.Dial("tcp", admin)
		if err != nil {
			t.Fatal(err)
		}
		silent = append(silent, conn)
	}

	// The server accepts in order, so this connection comes after the
	// silent ones and finds the listener full.
	extra, err := net.Dial("tcp", admin)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := extra.Read(make([]byte, 1)); n != 0 || (err != io.EOF && !errors.Is(err, syscall.ECONNRESET)) {
		t.Errorf("read on connection %d = %d bytes, %v; want it closed at once", limit+1, n, err)
	}
	gw.Logs.WaitFor(t, "connection closed: the admin listener has 64 connections open, as many as it takes, and none idle or without a request header after 1s", 5*time.Second, nil)

	// Once the silent connections have sent nothing for a second, a
	// health check takes the place of one of them. It was locked out
	// until the server's ReadHeaderTimeout of 10 s closed them.
	time.Sleep(1100 * time.Millisecond) // the scenario: a second of silence
	check := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 3 * time.Second}
	if response, err := check.Get("http://" + admin + "/healthz"); err != nil {
		t.Errorf("GET /healthz beside %d silent connections = %v, want an answer", limit, err)
	} else {
		response.Body.Close()
	}

	results := make(chan reloadResult, 1)
	reloadCall(testContext(t), ssetest.Dial(t, gw.Addrs[0]), results)
	if result := <-results; result.err != nil {
		t.Errorf("call while the admin listener is full = %v, want OK", result.err)
	}

	for _, conn := range silent {
		conn.Close()
	}
	silent = silent[:0]
	// The server notices the closed connections on its own goroutines,
	// and logs nothing then, so poll.
	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		response, err := client.Get("http://" + admin + "/healthz")
		if err == nil {
			response.Body.Close()
			if response.StatusCode != http.StatusOK {
				t.Errorf("GET /healthz after the connections closed = %d, want 200", response.StatusCode)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /healthz still fails 10s after the connections closed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Clients that keep their connections open after a request, each on
	// its own, fill the listener. A new client still gets a response, in
	// place of one of them.
	for range limit {
		keeper := &http.Client{Transport: &http.Transport{}, Timeout: 5 * time.Second}
		response, err := keeper.Get("http://" + admin + "/healthz")
		if err != nil {
			t.Fatalf("GET /healthz to fill the listener: %v", err)
		}
		io.Copy(io.Discard, response.Body)
		response.Body.Close()
		defer keeper.CloseIdleConnections()
	}
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	response, err := fresh.Get("http://" + admin + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz with %d idle keep-alive connections open: %v, want an answer", limit, err)
	}
	response.Body.Close()
	if response.StatusCode != http.StatusOK {
		t.Errorf("GET /healthz with the listener full of idle connections = %d, want 200", response.StatusCode)
	}
}

// TestAdminRequestWithoutBody checks that a request that announces a body,
// which no admin request has, and never sends it gets 400 and loses its
// connection at once. The server read the body before it responded: 64
// such connections locked the health checks out for good, and later for
// the 10 s of ReadTimeout.
func TestAdminRequestWithoutBody(t *testing.T) {
	t.Parallel()
	plugin := ssetest.StartHoldingPlugin(t, "p", false)
	gw := ssetest.StartGateway(t, reloadConfig(30*time.Second, plugin.Addr))
	conn, err := net.Dial("tcp", gw.AdminAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: admin\r\nContent-Length: 100\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// Well under ReadTimeout (10 s), which closed it before.
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	response, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("response to a request without its body: %v", err)
	}
	response.Body.Close()
	if response.StatusCode != http.StatusBadRequest {
		t.Errorf("request announcing a body = %d, want 400", response.StatusCode)
	}
	if _, err := io.Copy(io.Discard, conn); err != nil {
		t.Errorf("connection after the 400 = %v, want it closed by the server at once", err)
	}
}
