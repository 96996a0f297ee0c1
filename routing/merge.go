package routing

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/ssepb"
)

// mergedIDStride separates the function ids of a merged engine's members:
// member i's function n is function i*mergedIDStride+n of the merged
// engine. Ids computed so stay the same whether or not the other members
// are up, which matters because Qlik keeps the function list it learnt.
// A member function with an id outside [0, mergedIDStride) is left out.
const mergedIDStride = 1000

// MemberIDs returns the first and last function id of a merged engine
// that the member at position in its merge list can have.
func MemberIDs(position int) (first, last int32) {
	first = int32(position * mergedIDStride)
	return first, first + mergedIDStride - 1
}

// MergedFunction is one function of a merged engine: the member that
// serves it, and its id there.
type MergedFunction struct {
	Member   *Engine
	MemberID int32
	// Name is the function's name in the merged engine, after renaming.
	Name string
}

// Members returns the engines a merged engine merges, in order; nil for
// an engine that merges none.
func (e *Engine) Members() []*Engine {
	if members := e.members.Load(); members != nil {
		return *members
	}
	return nil
}

// Merged reports whether the engine merges other engines.
func (e *Engine) Merged() bool {
	return len(e.Config.Merge) > 0
}

// MembersKnown reports whether every member of a merged engine has its
// capabilities, so that AwaitMembers would return at once.
func (e *Engine) MembersKnown() bool {
	return len(e.UnknownMembers()) == 0
}

// UnknownMembers returns the members of a merged engine whose capabilities
// are not known, whose functions its list leaves out.
func (e *Engine) UnknownMembers() []*Engine {
	var unknown []*Engine
	for _, member := range e.Members() {
		if member.Capabilities() == nil {
			unknown = append(unknown, member)
		}
	}
	return unknown
}

// MemberOf returns the member of a merged engine whose range of function
// ids holds id, or nil when no member's does.
func (e *Engine) MemberOf(id int32) *Engine {
	members := e.Members()
	if id < 0 || int(id/mergedIDStride) >= len(members) {
		return nil
	}
	return members[id/mergedIDStride]
}

// LeftOutFunctions names the functions of a merged engine's members that
// its list leaves out, because their ids do not fit a member's range of
// ids, as "member: name (id)".
func (e *Engine) LeftOutFunctions() []string {
	var left []string
	for _, member := range e.Members() {
		capabilities := member.Capabilities()
		if capabilities == nil {
			continue
		}
		for _, definition := range capabilities.Message.GetFunctions() {
			if id := definition.GetFunctionId(); id < 0 || id >= mergedIDStride {
				left = append(left, fmt.Sprintf("%s: %s (%d)", member.Name, definition.GetName(), id))
			}
		}
	}
	return left
}

// AwaitMembers returns once each of members has its capabilities, or
// when one has not learnt them within what waited leaves of its
// reconnect_buffer, or when ctx ends. waited is how long the call waited
// before, as on an engine that a reload replaced. Right after the gateway
// starts, the probes may not have reached every plugin yet; a merged list
// without that member would hide its functions from QlikView, which asks
// only when it starts.
func AwaitMembers(ctx context.Context, waited time.Duration, members []*Engine) {
	start := time.Now()
	for _, member := range members {
		if member.Capabilities() != nil {
			continue
		}
		wait, cancel := context.WithDeadline(ctx, start.Add(member.Config.ReconnectWait()-waited))
		select {
		case <-member.knownSignal():
		case <-wait.Done():
		}
		cancel()
	}
}

// MergedCapabilities returns the capabilities a merged engine offers Qlik,
// built from its members' current ones, and what each function maps to.
// A function whose name an earlier function uses is renamed with
// merge_prefix, and numbered when that name is taken too (B_Forecast_2).
// The merged engine offers scripts when its merge_scripts member does and
// that member's scripts policy is not deny, which would reject them all.
func (e *Engine) MergedCapabilities() (*Capabilities, map[int32]MergedFunction) {
	merged := &ssepb.Capabilities{PluginIdentifier: "ssegw merge of " + strings.Join(e.Config.Merge, ", ")}
	functions := map[int32]MergedFunction{}
	names := map[string]bool{}
	var fetched time.Time
	for position, member := range e.Members() {
		capabilities := member.Capabilities()
		if capabilities == nil {
			continue
		}
		if capabilities.Fetched.After(fetched) {
			fetched = capabilities.Fetched
		}
		if strings.EqualFold(member.Name, e.Config.MergeScripts) && capabilities.Message.GetAllowScript() && member.Config.Scripts != config.ScriptsDeny {
			merged.AllowScript = true
		}
		definitions := slices.Clone(capabilities.Message.GetFunctions())
		slices.SortFunc(definitions, func(a, b *ssepb.FunctionDefinition) int {
			return cmp.Compare(a.GetFunctionId(), b.GetFunctionId())
		})
		for _, definition := range definitions {
			id := definition.GetFunctionId()
			if id < 0 || id >= mergedIDStride {
				continue
			}
			name := definition.GetName()
			if names[strings.ToLower(name)] {
				// The prefixed name may be taken too, by a function of that
				// very name: number it then.
				prefixed := strings.ReplaceAll(e.Config.MergePrefix, "{engine}", member.Name) + name
				name = prefixed
				for n := 2; names[strings.ToLower(name)]; n++ {
					name = prefixed + "_" + strconv.Itoa(n)
				}
			}
			names[strings.ToLower(name)] = true
			renamed := proto.CloneOf(definition)
			renamed.FunctionId = int32(position*mergedIDStride) + id
			renamed.Name = name
			merged.Functions = append(merged.Functions, renamed)
			functions[renamed.FunctionId] = MergedFunction{Member: member, MemberID: id, Name: name}
		}
	}
	return NewCapabilities(merged, fetched), functions
}

// ScriptMember returns the member that gets a merged engine's scripts, or
// nil when it offers none.
func (e *Engine) ScriptMember() *Engine {
	for _, member := range e.Members() {
		if strings.EqualFold(member.Name, e.Config.MergeScripts) {
			return member
		}
	}
	return nil
}
