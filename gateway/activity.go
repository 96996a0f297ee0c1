package gateway

import (
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
)

// Bounds of what the status page keeps, so that a storm of calls from
// many apps cannot grow the gateway's memory.
const (
	recentCallsKept     = 100
	appsKeptPerFunction = 50
	rateWindow          = 60 // seconds
)

// CallRecord is one finished call, as the status page shows it.
type CallRecord struct {
	Time     time.Time
	Engine   string
	Function string
	App      string // as redaction allows; "" when dropped or not sent
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
// per app and function, busiest first.
func (a *activity) rates(now time.Time) (functions, apps []functionRate) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for key, function := range a.functions {
		functions = append(functions, functionRate{Engine: key.engine, Function: key.function, PerSecond: function.calls.rate(now)})
		for name, app := range function.apps {
			apps = append(apps, functionRate{
				Engine: key.engine, Function: key.function, App: name,
				PerSecond: app.calls.rate(now), LastCall: app.lastCall,
			})
		}
	}
	busiestFirst := func(x, y functionRate) int {
		if x.PerSecond != y.PerSecond {
			if x.PerSecond > y.PerSecond {
				return -1
			}
			return 1
		}
		return strings.Compare(x.Engine+"."+x.Function+x.App, y.Engine+"."+y.Function+y.App)
	}
	slices.SortFunc(functions, busiestFirst)
	slices.SortFunc(apps, busiestFirst)
	return functions, apps
}

// appsOf returns the apps that called a function lately, most recent first.
func (a *activity) appsOf(engine, function string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	f, ok := a.functions[functionKey{engine, function}]
	if !ok {
		return nil
	}
	names := make([]string, 0, len(f.apps))
	for name := range f.apps {
		names = append(names, name)
	}
	slices.SortFunc(names, func(x, y string) int { return f.apps[y].lastCall.Compare(f.apps[x].lastCall) })
	return names
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
