package sseclient

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/ssegw/ssegw/ssepb"
)

// ErrFunctionNotFound is returned, wrapped, when an endpoint's capabilities
// list no function of the requested name.
var ErrFunctionNotFound = errors.New("function not found")

// FindFunction returns the definition of the function called name in
// capabilities. Names are compared exactly; when that fails, the error
// lists the functions there are and suggests a name that differs only in
// case.
func FindFunction(capabilities *ssepb.Capabilities, name string) (*ssepb.FunctionDefinition, error) {
	var names []string
	var sameButCase string
	for _, function := range capabilities.GetFunctions() {
		if function.GetName() == name {
			return function, nil
		}
		if strings.EqualFold(function.GetName(), name) {
			sameButCase = function.GetName()
		}
		names = append(names, function.GetName())
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%w: %q; the endpoint's capabilities list no functions", ErrFunctionNotFound, name)
	}
	slices.Sort(names)
	if sameButCase != "" {
		return nil, fmt.Errorf("%w: %q; did you mean %q? The endpoint offers %s", ErrFunctionNotFound, name, sameButCase, strings.Join(names, ", "))
	}
	return nil, fmt.Errorf("%w: %q; the endpoint offers %s", ErrFunctionNotFound, name, strings.Join(names, ", "))
}

// Function calls GetCapabilities and returns the definition of the
// function called name, whose id and parameter types a call by name needs,
// as Qlik looks up <EngineName>.<FunctionName> in the capabilities.
func (c *Client) Function(ctx context.Context, name string) (*ssepb.FunctionDefinition, error) {
	capabilities, _, err := c.Capabilities(ctx)
	if err != nil {
		return nil, err
	}
	return FindFunction(capabilities, name)
}
