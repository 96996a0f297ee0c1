package routing_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/routing"
	"github.com/ssegw/ssegw/ssepb"
)

// mergeMember is an engine of a merge test: its name, the capabilities
// it has learnt, nil for none yet, and its scripts policy, empty for the
// default.
type mergeMember struct {
	name         string
	capabilities *ssepb.Capabilities
	fetched      time.Time
	scripts      string
}

// definition returns a scalar function definition with one numeric
// parameter named after the function, so that a renamed copy differs from
// another member's function of the same name in more than the name.
func definition(id int32, name string) *ssepb.FunctionDefinition {
	return &ssepb.FunctionDefinition{
		FunctionId: id, Name: name,
		FunctionType: ssepb.FunctionType_SCALAR, ReturnType: ssepb.DataType_NUMERIC,
		Params: []*ssepb.Parameter{{Name: strings.ToLower(name) + "_input", DataType: ssepb.DataType_NUMERIC}},
	}
}

// capabilities returns a plugin's capabilities with functions.
func capabilities(allowScript bool, functions ...*ssepb.FunctionDefinition) *ssepb.Capabilities {
	return &ssepb.Capabilities{AllowScript: allowScript, PluginIdentifier: "test", Functions: functions}
}

// newMergedEngine returns engine M merging members in order, in a table
// with the members, after each member learnt its capabilities.
func newMergedEngine(t *testing.T, merged *config.Engine, members []mergeMember) *routing.Engine {
	t.Helper()
	engines := []*routing.Engine{}
	for _, member := range members {
		engine := &routing.Engine{Name: member.name, Config: &config.Engine{Name: member.name, Scripts: member.scripts}}
		if member.capabilities != nil {
			fetched := member.fetched
			if fetched.IsZero() {
				fetched = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
			}
			engine.SetCapabilities(routing.NewCapabilities(member.capabilities, fetched))
		}
		engines = append(engines, engine)
	}
	if merged.MergePrefix == "" {
		merged.MergePrefix = config.DefaultMergePrefix
	}
	merged.Name = "M"
	engine := &routing.Engine{Name: "M", Config: merged}
	routing.NewTable(append(engines, engine))
	return engine
}

// mergedFunction is one function of a merged engine as a test expects it:
// its id and name in the merged engine, and the member and id it maps to.
type mergedFunction struct {
	ID       int32
	Name     string
	Member   string
	MemberID int32
}

// mergedFunctions returns the merged engine's function list in order, with
// what each maps to. It fails the test when the list and the map do not
// match each other. It also fails it when the list names two functions
// alike, because Qlik calls functions by name and could call only one.
func mergedFunctions(t *testing.T, engine *routing.Engine) []mergedFunction {
	t.Helper()
	merged, functions := engine.MergedCapabilities()
	var out []mergedFunction
	names := map[string]int32{}
	for _, definition := range merged.Message.GetFunctions() {
		if id, ok := names[strings.ToLower(definition.GetName())]; ok {
			t.Errorf("MergedCapabilities() names functions %d and %d both %s, want each name once", id, definition.GetFunctionId(), definition.GetName())
		}
		names[strings.ToLower(definition.GetName())] = definition.GetFunctionId()
		function, ok := functions[definition.GetFunctionId()]
		if !ok {
			t.Errorf("MergedCapabilities() lists function %d %s, but its map lacks the id", definition.GetFunctionId(), definition.GetName())
			continue
		}
		if function.Name != definition.GetName() {
			t.Errorf("MergedCapabilities() map name of function %d = %q, want %q as listed", definition.GetFunctionId(), function.Name, definition.GetName())
		}
		out = append(out, mergedFunction{ID: definition.GetFunctionId(), Name: definition.GetName(), Member: function.Member.Name, MemberID: function.MemberID})
	}
	if len(functions) != len(merged.Message.GetFunctions()) {
		t.Errorf("MergedCapabilities() map has %d functions, list has %d", len(functions), len(merged.Message.GetFunctions()))
	}
	return out
}

// TestMergedCapabilities checks the function list of a merged engine.
// Member i's function n becomes function i*1000+n. A name that an earlier
// function already uses gets merge_prefix, and also a number when the
// prefixed name is taken. A member without capabilities leaves a gap and
// does not move the other members' ids. Ids outside 0 to 999 are left out.
func TestMergedCapabilities(t *testing.T) {
	tests := []struct {
		name    string
		merge   []string
		prefix  string
		members []mergeMember
		want    []mergedFunction
	}{
		{
			name:  "ids by member position",
			merge: []string{"A", "B"},
			members: []mergeMember{
				{name: "A", capabilities: capabilities(false, definition(0, "Forecast"), definition(7, "Smooth"))},
				{name: "B", capabilities: capabilities(false, definition(0, "Trend"), definition(999, "Cluster"))},
			},
			want: []mergedFunction{
				{0, "Forecast", "A", 0},
				{7, "Smooth", "A", 7},
				{1000, "Trend", "B", 0},
				{1999, "Cluster", "B", 999},
			},
		},
		{
			name:  "order of merge, not of the table",
			merge: []string{"B", "A"},
			members: []mergeMember{
				{name: "A", capabilities: capabilities(false, definition(1, "Smooth"))},
				{name: "B", capabilities: capabilities(false, definition(2, "Trend"))},
			},
			want: []mergedFunction{
				{2, "Trend", "B", 2},
				{1001, "Smooth", "A", 1},
			},
		},
		{
			name:  "colliding name renamed",
			merge: []string{"A", "B"},
			members: []mergeMember{
				{name: "A", capabilities: capabilities(false, definition(3, "Forecast"))},
				{name: "B", capabilities: capabilities(false, definition(5, "Forecast"))},
			},
			want: []mergedFunction{
				{3, "Forecast", "A", 3},
				{1005, "B_Forecast", "B", 5},
			},
		},
		{
			name:  "collision ignores case",
			merge: []string{"A", "B"},
			members: []mergeMember{
				{name: "A", capabilities: capabilities(false, definition(0, "Forecast"))},
				{name: "B", capabilities: capabilities(false, definition(0, "FORECAST"))},
			},
			want: []mergedFunction{
				{0, "Forecast", "A", 0},
				{1000, "B_FORECAST", "B", 0},
			},
		},
		{
			name:   "custom prefix",
			merge:  []string{"A", "B"},
			prefix: "from_{engine}_",
			members: []mergeMember{
				{name: "A", capabilities: capabilities(false, definition(0, "Forecast"))},
				{name: "B", capabilities: capabilities(false, definition(0, "Forecast"))},
			},
			want: []mergedFunction{
				{0, "Forecast", "A", 0},
				{1000, "from_B_Forecast", "B", 0},
			},
		},
		{
			name:  "three members sharing a name",
			merge: []string{"A", "B", "C"},
			members: []mergeMember{
				{name: "A", capabilities: capabilities(false, definition(0, "Forecast"))},
				{name: "B", capabilities: capabilities(false, definition(1, "Forecast"))},
				{name: "C", capabilities: capabilities(false, definition(2, "Forecast"), definition(3, "Only"))},
			},
			want: []mergedFunction{
				{0, "Forecast", "A", 0},
				{1001, "B_Forecast", "B", 1},
				{2002, "C_Forecast", "C", 2},
				{2003, "Only", "C", 3},
			},
		},
		{
			name:  "renamed name used by an earlier member",
			merge: []string{"A", "B"},
			members: []mergeMember{
				{name: "A", capabilities: capabilities(false, definition(0, "Forecast"), definition(1, "B_Forecast"))},
				{name: "B", capabilities: capabilities(false, definition(0, "Forecast"))},
			},
			want: []mergedFunction{
				{0, "Forecast", "A", 0},
				{1, "B_Forecast", "A", 1},
				{1000, "B_Forecast_2", "B", 0},
			},
		},
		{
			name:  "renamed name used by the same member",
			merge: []string{"A", "B"},
			members: []mergeMember{
				{name: "A", capabilities: capabilities(false, definition(0, "Forecast"))},
				{name: "B", capabilities: capabilities(false, definition(0, "B_Forecast"), definition(1, "Forecast"))},
			},
			want: []mergedFunction{
				{0, "Forecast", "A", 0},
				{1000, "B_Forecast", "B", 0},
				{1001, "B_Forecast_2", "B", 1},
			},
		},
		{
			name:  "member without capabilities",
			merge: []string{"A", "B"},
			members: []mergeMember{
				{name: "A"},
				{name: "B", capabilities: capabilities(false, definition(0, "Trend"), definition(5, "Forecast"))},
			},
			want: []mergedFunction{
				{1000, "Trend", "B", 0},
				{1005, "Forecast", "B", 5},
			},
		},
		{
			name:  "no member with capabilities",
			merge: []string{"A", "B"},
			members: []mergeMember{
				{name: "A"},
				{name: "B"},
			},
			want: nil,
		},
		{
			name:  "ids out of range left out",
			merge: []string{"A", "B"},
			members: []mergeMember{
				{name: "A", capabilities: capabilities(false, definition(-1, "Negative"), definition(999, "Last"), definition(1000, "TooBig"))},
				{name: "B", capabilities: capabilities(false, definition(4000, "Far"), definition(1, "Near"))},
			},
			want: []mergedFunction{
				{999, "Last", "A", 999},
				{1001, "Near", "B", 1},
			},
		},
		{
			name:  "member functions taken in id order",
			merge: []string{"A", "B"},
			members: []mergeMember{
				{name: "A", capabilities: capabilities(false, definition(9, "Zeta"), definition(2, "Alpha"))},
				{name: "B", capabilities: capabilities(false, definition(8, "Alpha"), definition(4, "Beta"))},
			},
			want: []mergedFunction{
				{2, "Alpha", "A", 2},
				{9, "Zeta", "A", 9},
				{1004, "Beta", "B", 4},
				{1008, "B_Alpha", "B", 8},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			engine := newMergedEngine(t, &config.Engine{Merge: tt.merge, MergePrefix: tt.prefix}, tt.members)
			if diff := cmp.Diff(tt.want, mergedFunctions(t, engine)); diff != "" {
				t.Errorf("MergedCapabilities() functions (-want +got):\n%s", diff)
			}
		})
	}
}

// TestMergedCapabilitiesKeepDefinitions checks that a merged function
// keeps its member's types and parameters, and that renaming leaves the
// member's own capabilities as they were.
func TestMergedCapabilitiesKeepDefinitions(t *testing.T) {
	a := capabilities(false, definition(3, "Forecast"))
	b := capabilities(true, definition(5, "Forecast"))
	b.Functions[0].FunctionType = ssepb.FunctionType_TENSOR
	b.Functions[0].ReturnType = ssepb.DataType_DUAL
	b.Functions[0].Params = append(b.Functions[0].Params, &ssepb.Parameter{Name: "horizon", DataType: ssepb.DataType_STRING})
	originalB := proto.CloneOf(b)
	engine := newMergedEngine(t, &config.Engine{Merge: []string{"A", "B"}}, []mergeMember{
		{name: "A", capabilities: a},
		{name: "B", capabilities: b},
	})

	merged, _ := engine.MergedCapabilities()
	want := proto.CloneOf(b.Functions[0])
	want.FunctionId = 1005
	want.Name = "B_Forecast"
	var got *ssepb.FunctionDefinition
	for _, function := range merged.Message.GetFunctions() {
		if function.GetFunctionId() == 1005 {
			got = function
		}
	}
	if !proto.Equal(got, want) {
		t.Errorf("MergedCapabilities() function 1005 = %v, want %v", got, want)
	}
	if !proto.Equal(b, originalB) {
		t.Errorf("member B's capabilities after MergedCapabilities() = %v, want unchanged %v", b, originalB)
	}
	if got := merged.Function(1005); !proto.Equal(got, want) {
		t.Errorf("MergedCapabilities().Function(1005) = %v, want %v", got, want)
	}
}

// TestMergedCapabilitiesFetched checks that a merged engine's capabilities
// are dated by the freshest member's, so that they count as changed when
// any member's did.
func TestMergedCapabilitiesFetched(t *testing.T) {
	older := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	newer := older.Add(time.Hour)
	engine := newMergedEngine(t, &config.Engine{Merge: []string{"A", "B"}}, []mergeMember{
		{name: "A", capabilities: capabilities(false, definition(0, "Forecast")), fetched: newer},
		{name: "B", capabilities: capabilities(false, definition(0, "Trend")), fetched: older},
	})
	merged, _ := engine.MergedCapabilities()
	if !merged.Fetched.Equal(newer) {
		t.Errorf("MergedCapabilities().Fetched = %v, want %v", merged.Fetched, newer)
	}
}

// TestMergedScripts checks that a merged engine offers scripts exactly
// when its merge_scripts member's plugin offers them and the member's
// scripts policy is not deny, and that ScriptMember names that member.
func TestMergedScripts(t *testing.T) {
	tests := []struct {
		name            string
		mergeScripts    string
		members         []mergeMember
		wantAllowScript bool
		wantMember      string // empty for none
	}{
		{
			name:         "member with scripts",
			mergeScripts: "B",
			members: []mergeMember{
				{name: "A", capabilities: capabilities(false, definition(0, "Forecast"))},
				{name: "B", capabilities: capabilities(true, definition(0, "Trend"))},
			},
			wantAllowScript: true,
			wantMember:      "B",
		},
		{
			name:         "member named in other case",
			mergeScripts: "b",
			members: []mergeMember{
				{name: "A", capabilities: capabilities(false)},
				{name: "B", capabilities: capabilities(true)},
			},
			wantAllowScript: true,
			wantMember:      "B",
		},
		{
			name:         "member with scripts: deny",
			mergeScripts: "B",
			members: []mergeMember{
				{name: "A", capabilities: capabilities(false, definition(0, "Forecast"))},
				{name: "B", capabilities: capabilities(true, definition(0, "Trend")), scripts: config.ScriptsDeny},
			},
			wantAllowScript: false,
			wantMember:      "B",
		},
		{
			name:         "member with scripts: audit",
			mergeScripts: "B",
			members: []mergeMember{
				{name: "A", capabilities: capabilities(false, definition(0, "Forecast"))},
				{name: "B", capabilities: capabilities(true, definition(0, "Trend")), scripts: config.ScriptsAudit},
			},
			wantAllowScript: true,
			wantMember:      "B",
		},
		{
			name:         "member without scripts",
			mergeScripts: "A",
			members: []mergeMember{
				{name: "A", capabilities: capabilities(false, definition(0, "Forecast"))},
				{name: "B", capabilities: capabilities(true, definition(0, "Trend"))},
			},
			wantAllowScript: false,
			wantMember:      "A",
		},
		{
			name:         "member without capabilities yet",
			mergeScripts: "B",
			members: []mergeMember{
				{name: "A", capabilities: capabilities(true, definition(0, "Forecast"))},
				{name: "B"},
			},
			wantAllowScript: false,
			wantMember:      "B",
		},
		{
			name: "no merge_scripts",
			members: []mergeMember{
				{name: "A", capabilities: capabilities(true, definition(0, "Forecast"))},
				{name: "B", capabilities: capabilities(true, definition(0, "Trend"))},
			},
			wantAllowScript: false,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			engine := newMergedEngine(t, &config.Engine{Merge: []string{"A", "B"}, MergeScripts: tt.mergeScripts}, tt.members)
			merged, _ := engine.MergedCapabilities()
			if got := merged.Message.GetAllowScript(); got != tt.wantAllowScript {
				t.Errorf("MergedCapabilities() allowScript = %v, want %v", got, tt.wantAllowScript)
			}
			got := ""
			if member := engine.ScriptMember(); member != nil {
				got = member.Name
			}
			if got != tt.wantMember {
				t.Errorf("ScriptMember() = %q, want %q", got, tt.wantMember)
			}
		})
	}
}

// TestMergedMembers checks that NewTable points a merged engine at its
// members in the order of merge, whatever their case there, and that an
// engine that merges none reports so.
func TestMergedMembers(t *testing.T) {
	engine := newMergedEngine(t, &config.Engine{Merge: []string{"b", "A"}}, []mergeMember{{name: "A"}, {name: "B"}})
	var names []string
	for _, member := range engine.Members() {
		names = append(names, member.Name)
	}
	if want := []string{"B", "A"}; !slices.Equal(names, want) {
		t.Errorf("Members() = %v, want %v", names, want)
	}
	if !engine.Merged() {
		t.Errorf("Merged() of an engine with merge = false, want true")
	}

	plain := &routing.Engine{Name: "A", Config: &config.Engine{}}
	routing.NewTable([]*routing.Engine{plain})
	if plain.Merged() {
		t.Errorf("Merged() of an engine without merge = true, want false")
	}
	if got := plain.Members(); got != nil {
		t.Errorf("Members() of an engine without merge = %v, want nil", got)
	}
}

// TestMembersKnown checks that MembersKnown reports true only once every
// member of a merged engine has capabilities.
func TestMembersKnown(t *testing.T) {
	tests := []struct {
		name    string
		members []mergeMember
		want    bool
	}{
		{
			name:    "every member known",
			members: []mergeMember{{name: "A", capabilities: capabilities(false)}, {name: "B", capabilities: capabilities(false)}},
			want:    true,
		},
		{
			name:    "one member without capabilities yet",
			members: []mergeMember{{name: "A", capabilities: capabilities(false)}, {name: "B"}},
			want:    false,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			engine := newMergedEngine(t, &config.Engine{Merge: []string{"A", "B"}}, tt.members)
			if got := engine.MembersKnown(); got != tt.want {
				t.Errorf("MembersKnown() = %v, want %v", got, tt.want)
			}
		})
	}
}
