package routing

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ssegw/ssegw/ssepb"
)

// Capabilities is a plugin's answer to GetCapabilities, indexed for the
// lookups of the call path. It is immutable once built.
type Capabilities struct {
	Message *ssepb.Capabilities
	// Fetched is when the plugin sent it.
	Fetched time.Time

	byID       map[int32]*ssepb.FunctionDefinition
	normalized string // see key
}

// NewCapabilities indexes a GetCapabilities answer received at fetched.
func NewCapabilities(message *ssepb.Capabilities, fetched time.Time) *Capabilities {
	c := &Capabilities{
		Message: message,
		Fetched: fetched,
		byID:    make(map[int32]*ssepb.FunctionDefinition, len(message.GetFunctions())),
	}
	for _, function := range message.GetFunctions() {
		c.byID[function.GetFunctionId()] = function
	}
	comparable := &ssepb.Capabilities{AllowScript: message.GetAllowScript(), Functions: slices.Clone(message.GetFunctions())}
	slices.SortFunc(comparable.Functions, func(a, b *ssepb.FunctionDefinition) int {
		return cmp.Compare(a.GetFunctionId(), b.GetFunctionId())
	})
	encoded, _ := proto.MarshalOptions{Deterministic: true}.Marshal(comparable)
	c.normalized = string(encoded)
	return c
}

// key returns a string that is equal for two capabilities exactly when
// they describe the same functions (ids, names, types, parameters) and
// the same allowScript. The plugin's identifier and version do not count:
// replicas of one plugin may report their own.
func (c *Capabilities) key() string {
	return c.normalized
}

// SameFunctions reports whether c and other describe the same functions
// and the same allowScript, as an engine's replicas must.
func (c *Capabilities) SameFunctions(other *Capabilities) bool {
	return c.key() == other.key()
}

// DifferingFunctions returns the ids of functions that one of c and other
// has and the other lacks or defines differently, sorted.
func (c *Capabilities) DifferingFunctions(other *Capabilities) []int32 {
	return c.differingFunctions(other)
}

// differingFunctions returns the ids of functions that one of c and other
// has and the other lacks or defines differently, sorted.
func (c *Capabilities) differingFunctions(other *Capabilities) []int32 {
	var ids []int32
	for id, function := range c.byID {
		if !proto.Equal(function, other.byID[id]) {
			ids = append(ids, id)
		}
	}
	for id := range other.byID {
		if _, ok := c.byID[id]; !ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// differenceFrom describes how c differs from agreed, the engine's
// capabilities, for a replica's last error: the ids of the functions that
// differ, and allowScript when it differs.
func (c *Capabilities) differenceFrom(agreed *Capabilities) string {
	var differences []string
	if ids := c.differingFunctions(agreed); len(ids) > 0 {
		differences = append(differences, fmt.Sprintf("functions differ from the engine's at ids %v", ids))
	}
	if c.Message.GetAllowScript() != agreed.Message.GetAllowScript() {
		differences = append(differences, fmt.Sprintf("allowScript is %v where the engine's is %v",
			c.Message.GetAllowScript(), agreed.Message.GetAllowScript()))
	}
	if len(differences) == 0 {
		// Each function id is the same, yet the lists differ: one lists an
		// id twice.
		return "functions differ from the engine's"
	}
	return strings.Join(differences, " and ")
}

// Function returns the function with the given id, or nil when the
// capabilities are unknown (c is nil) or have no such function.
func (c *Capabilities) Function(id int32) *ssepb.FunctionDefinition {
	if c == nil {
		return nil
	}
	return c.byID[id]
}
