package routing

import (
	"time"

	"github.com/ssegw/ssegw/ssepb"
)

// Capabilities is a plugin's answer to GetCapabilities, indexed for the
// lookups of the call path. It is immutable once built.
type Capabilities struct {
	Message *ssepb.Capabilities
	// Fetched is when the plugin sent it.
	Fetched time.Time

	byID map[int32]*ssepb.FunctionDefinition
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
	return c
}

// Function returns the function with the given id, or nil when the
// capabilities are unknown (c is nil) or have no such function.
func (c *Capabilities) Function(id int32) *ssepb.FunctionDefinition {
	if c == nil {
		return nil
	}
	return c.byID[id]
}
