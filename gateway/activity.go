package gateway

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
)

// Bounds of what the status page keeps, so that a storm of calls from
// many apps cannot grow the gateway's memory.
const (
	recentCallsKept     = 100
	appsKeptPerFunction = 50
	rateWindow          = 60 // seconds

	// maxAppIDBytes is the max length in bytes of an app id that the status
	// page and spans keep, and of a user id in spans. A Qlik
	// Sense app id is a GUID of 36 characters, but a client may send an
	// id as long as limits.max_header_list_size allows, and 50 such ids
	// per function would cost megabytes.
	maxAppIDBytes = 256
)

// CallRecord is one finished call, as the status page shows it.
type CallRecord struct {
	Time     time.Time
	Engine   string
	Function string
	// App is the app id as redaction allows, cut by boundedText when it
	// is longer than maxAppIDBytes. It is "" when redaction drops it, when the call sent none,
	// and when admission rejected the call.
	App      string
	Duration time.Duration
	RowsIn   int64
	RowsOut  int64
	Code     codes.Code
	TraceID  string
}

// activity keeps the recent calls, and calls per second per function and
// per app, for the status page. Calls record into it as they end.
type activity struct {
	mu        sync.Mutex // guards the following
	recent    [recentCallsKept]CallRecord
	next      int // index in recent of the next record
	stored    int // records in recent, up to recentCallsKept
	functions map[functionKey]*functionActivity
}

type functionKey struct{ engine, function string }

type functionActivity struct {
	calls rateCounter
	apps  map[string]*appActivity
}

type appActivity struct {
	lastCall time.Time
	calls    rateCounter
}

func newActivity() *activity {
	return &activity{functions: map[functionKey]*functionActivity{}}
}

// record adds a finished call.
func (a *activity) record(r CallRecord) {
	r.App = boundedText(r.App, maxAppIDBytes)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.recent[a.next] = r
	a.next = (a.next + 1) % recentCallsKept
	a.stored = min(a.stored+1, recentCallsKept)
	if r.Engine == "" {
		return // rejected before routing: in the recent calls only
	}

	key := functionKey{r.Engine, r.Function}
	function, ok := a.functions[key]
	if !ok {
		function = &functionActivity{apps: map[string]*appActivity{}}
		a.functions[key] = function
	}
	function.calls.add(r.Time)
	if r.App == "" {
		return
	}
	app, ok := function.apps[r.App]
	if !ok {
		if len(function.apps) >= appsKeptPerFunction {
			function.forgetOldestApp()
		}
		app = &appActivity{}
		function.apps[r.App] = app
	}
	app.lastCall = r.Time
	app.calls.add(r.Time)
}

func (f *functionActivity) forgetOldestApp() {
	var oldest string
	var oldestTime time.Time
	for name, app := range f.apps {
		if oldest == "" || app.lastCall.Before(oldestTime) {
			oldest, oldestTime = name, app.lastCall
		}
	}
	delete(f.apps, oldest)
}

// recentCalls returns the kept calls, newest first.
func (a *activity) recentCalls() []CallRecord {
	a.mu.Lock()
	defer a.mu.Unlock()
	records := make([]CallRecord, 0, a.stored)
	for i := 1; i <= a.stored; i++ {
		records = append(records, a.recent[(a.next-i+recentCallsKept)%recentCallsKept])
	}
	return records
}

// functionRate is the call rate of one function, or of one app calling it.
type functionRate struct {
	Engine, Function, App string
	PerSecond             float64
	LastCall              time.Time
}

// rates returns calls per second over the last minute, per function and
// per app and function, busiest first. It sorts after releasing a.mu,
// because every call's end waits for that lock in record.
func (a *activity) rates(now time.Time) (functions, apps []functionRate) {
	a.mu.Lock()
	functions = make([]functionRate, 0, len(a.functions))
	appCount := 0
	for _, function := range a.functions {
		appCount += len(function.apps)
	}
	apps = make([]functionRate, 0, appCount)
	for key, function := range a.functions {
		functions = append(functions, functionRate{Engine: key.engine, Function: key.function, PerSecond: function.calls.rate(now)})
		for name, app := range function.apps {
			apps = append(apps, functionRate{
				Engine: key.engine, Function: key.function, App: name,
				PerSecond: app.calls.rate(now), LastCall: app.lastCall,
			})
		}
	}
	a.mu.Unlock()

	slices.SortFunc(functions, busiestFirst)
	slices.SortFunc(apps, busiestFirst)
	return functions, apps
}

// busiestFirst orders rates by calls per second, highest first, then by
// engine, function and app.
func busiestFirst(x, y functionRate) int {
	if order := cmp.Compare(y.PerSecond, x.PerSecond); order != 0 {
		return order
	}
	return cmp.Or(strings.Compare(x.Engine, y.Engine), strings.Compare(x.Function, y.Function), strings.Compare(x.App, y.App))
}

// appsOf returns the apps that called a function lately, most recent first.
func (a *activity) appsOf(engine, function string) []string {
	type appCall struct {
		name     string
		lastCall time.Time
	}
	a.mu.Lock()
	f, ok := a.functions[functionKey{engine, function}]
	if !ok {
		a.mu.Unlock()
		return nil
	}
	calls := make([]appCall, 0, len(f.apps))
	for name, app := range f.apps {
		calls = append(calls, appCall{name, app.lastCall})
	}
	a.mu.Unlock()

	slices.SortFunc(calls, func(x, y appCall) int { return y.lastCall.Compare(x.lastCall) })
	names := make([]string, len(calls))
	for i, call := range calls {
		names[i] = call.name
	}
	return names
}

// boundedText returns text from a client as the gateway keeps it on its
// status page and in spans. The result is valid UTF-8, and the text is
// whole up to limit bytes. A longer text is cut at limit bytes, back to a
// character boundary, and followed by "…", its length and the start of
// its SHA-256, such as "9f2c…[70000 bytes, sha256 5d41402abc4b2a76]". The
// hash keeps apart two long texts that start alike.
func boundedText(text string, limit int) string {
	valid := text
	if !utf8.ValidString(valid) {
		valid = strings.ToValidUTF8(valid, "\uFFFD")
	}
	if len(valid) <= limit {
		return valid
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(valid[cut]) {
		cut--
	}
	sum := sha256.Sum256([]byte(text))
	return valid[:cut] + "…[" + strconv.Itoa(len(text)) + " bytes, sha256 " + hex.EncodeToString(sum[:8]) + "]"
}

// rateCounter counts events per second over the last rateWindow seconds,
// in constant memory.
type rateCounter struct {
	buckets [rateWindow]struct {
		second int64
		count  int64
	}
}

func (c *rateCounter) add(t time.Time) {
	second := t.Unix()
	bucket := &c.buckets[second%rateWindow]
	if bucket.second != second {
		bucket.second, bucket.count = second, 0
	}
	bucket.count++
}

// rate returns the events per second over the window that ends at now.
func (c *rateCounter) rate(now time.Time) float64 {
	var total int64
	for _, bucket := range c.buckets {
		if now.Unix()-bucket.second < rateWindow {
			total += bucket.count
		}
	}
	return float64(total) / rateWindow
}

// RecentCalls returns the last calls the gateway finished, newest first:
// at most 100, with app ids as the redaction setting allows.
func (g *Gateway) RecentCalls() []CallRecord {
	return g.observer.activity.recentCalls()
}
