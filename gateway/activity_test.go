package gateway

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// TestActivityBoundsLongAppIDs checks that the status page's activity
// keeps app ids over maxAppIDBytes, which a client may send up to the
// 64 KiB of request headers, cut at a character boundary and marked with
// their length and hash. It checks the recent calls, the rates and the
// apps of a function, and that two long ids that start alike stay apart.
func TestActivityBoundsLongAppIDs(t *testing.T) {
	long := strings.Repeat("x", 64<<10)
	multibyte := "a" + strings.Repeat("é", 200) // byte 256 is inside an é
	tests := []struct {
		name       string
		app        string
		wantPrefix string
		wantMarker string // empty when the id is kept whole
	}{
		{name: "GUID", app: "2e1f8c4a-7b3d-4e5f-9a6b-1c2d3e4f5a6b", wantPrefix: "2e1f8c4a-7b3d-4e5f-9a6b-1c2d3e4f5a6b"},
		{name: "at the bound", app: long[:maxAppIDBytes], wantPrefix: long[:maxAppIDBytes]},
		{name: "one byte over", app: long[:maxAppIDBytes+1], wantPrefix: long[:maxAppIDBytes], wantMarker: "…[257 bytes, sha256 "},
		{name: "64 KiB ending A", app: long + "A", wantPrefix: long[:maxAppIDBytes], wantMarker: "…[65537 bytes, sha256 "},
		{name: "64 KiB ending B", app: long + "B", wantPrefix: long[:maxAppIDBytes], wantMarker: "…[65537 bytes, sha256 "},
		{name: "cut inside a character", app: multibyte, wantPrefix: multibyte[:maxAppIDBytes-1], wantMarker: "…[401 bytes, sha256 "},
	}
	a := newActivity()
	now := time.Now()
	testByKeptID := map[string]string{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a.record(CallRecord{Time: now, Engine: "R", Function: "Echo", App: tt.app})
			got := a.recentCalls()[0].App

			if tt.wantMarker == "" {
				if got != tt.app {
					t.Errorf("kept app id = %.80q (%d bytes), want it whole (%d bytes)", got, len(got), len(tt.app))
				}
			} else {
				rest, ok := strings.CutPrefix(got, tt.wantPrefix)
				if !ok {
					t.Errorf("kept app id = %.80q…, want it to start with the first %d bytes of the id", got, len(tt.wantPrefix))
				}
				if !strings.HasPrefix(rest, tt.wantMarker) || !strings.HasSuffix(rest, "]") {
					t.Errorf("kept app id ends %.80q, want %q, 16 hex digits and \"]\"", rest, tt.wantMarker)
				}
			}
			if limit := maxAppIDBytes + 64; len(got) > limit {
				t.Errorf("kept app id has %d bytes, want at most %d", len(got), limit)
			}
			if !utf8.ValidString(got) {
				t.Errorf("kept app id %.80q is not valid UTF-8", got)
			}
			if other, ok := testByKeptID[got]; ok {
				t.Errorf("kept app id %.80q is the same as that of %q", got, other)
			}
			testByKeptID[got] = tt.name
		})
	}

	_, apps := a.rates(now)
	for _, app := range apps {
		if _, ok := testByKeptID[app.App]; !ok {
			t.Errorf("rates() lists app %.80q (%d bytes), want one of the kept ids", app.App, len(app.App))
		}
	}
	if len(apps) != len(tests) {
		t.Errorf("rates() lists %d apps, want %d", len(apps), len(tests))
	}
	for _, app := range a.appsOf("R", "Echo") {
		if _, ok := testByKeptID[app]; !ok {
			t.Errorf("appsOf(R, Echo) lists %.80q (%d bytes), want one of the kept ids", app, len(app))
		}
	}
}

// TestActivityRatesSortWithoutAllocating checks that rates() allocates
// only the two lists it returns, because it sorts while it holds the lock
// that every finishing call waits for.
func TestActivityRatesSortWithoutAllocating(t *testing.T) {
	a := newActivity()
	now := time.Now()
	for function := range 20 {
		for app := range appsKeptPerFunction {
			a.record(CallRecord{Time: now, Engine: "R", Function: "F" + strconv.Itoa(function), App: fmt.Sprintf("app-%02d", app)})
		}
	}

	allocations := testing.AllocsPerRun(5, func() { a.rates(now) })
	if allocations > 2 {
		t.Errorf("rates() of 20 functions with %d apps each made %v allocations, want at most 2", appsKeptPerFunction, allocations)
	}
}
