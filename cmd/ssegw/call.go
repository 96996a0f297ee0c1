package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ssegw/ssegw/sseclient"
	"github.com/ssegw/ssegw/ssepb"
	"github.com/ssegw/ssegw/tlsutil"
)

// Call types, the second argument of the call command.
const (
	callCapabilities = "capabilities"
	callFunction     = "function"
	callScript       = "script"
)

// callFlags are the settings of the call command.
type callFlags struct {
	// Connection, as for a backend of the gateway.
	tlsDir         string
	serverName     string
	engine         string
	timeout        time.Duration
	maxMessageSize int

	// Rows and headers of function and script calls.
	input      string
	header     bool
	args       []string
	bundleSize int
	appID      string
	userID     string

	// Script calls only.
	function string
	types    string
	names    []string
	tensor   bool
}

// rowFlags apply to function and script calls, scriptFlags to script
// calls only.
var (
	rowFlags    = []string{"input", "header", "arg", "bundle-size", "app-id", "user-id"}
	scriptFlags = []string{"function", "types", "names", "tensor"}
)

func newCallCommand() *cobra.Command {
	var flags callFlags
	cmd := &cobra.Command{
		Use:   "call ADDR capabilities | function NAME | script SCRIPT",
		Short: "Call an SSE plugin or the gateway as a Qlik engine does, and print the answer",
		Long: `Call an SSE endpoint, a plugin or the gateway at ADDR (host:port), as a
Qlik engine does, and print what came back: a way to check a plugin
without opening Qlik.

  call ADDR capabilities
      GetCapabilities: the plugin's identifier and version, whether it
      allows scripts, and its functions.
  call ADDR function NAME
      ExecuteFunction of the function called NAME in the capabilities,
      with its function id in the qlik-functionrequestheader-bin header.
  call ADDR script SCRIPT
      EvaluateScript of SCRIPT as the script function --function, with the
      functionType, returnType and parameters that Qlik sends for it.

Rows for function and script come from --arg flags, one column each, or
else from standard input: CSV (--input csv, a first line of column names
with --header) or a JSON array of rows (--input json). Each value takes
its parameter's type: a NUMERIC parameter gets a number, a STRING
parameter text, and a DUAL parameter both, with NaN as the number of text
that is not one. An empty NUMERIC value, or a JSON null, is sent as NaN. In
JSON, a DUAL value may be a [number, "text"] pair. The rows go in bundles
of --bundle-size, with a qlik-commonrequestheader-bin header that contains
--app-id, --user-id and the number of rows as the cardinality. The flags
--arg, --input, --header, --bundle-size, --app-id and --user-id apply to
function and script calls, and --function, --types, --names and --tensor
to script calls only.

A script call has one parameter per input column. The plain script
functions give every parameter the same type (NUMERIC, or STRING for the
Str functions); the Ex functions take the types from --types, as Qlik
takes them from their first argument. Parameters are named by --names, or
by the CSV header line with --header, else arg1, arg2 and so on.

The output shows the response headers, with qlik-tabledescription-bin
decoded, the rows returned, the trailers and the duration. Each returned
column is shown by its type: a number for NUMERIC, the text for STRING, and
"text (number)" for DUAL. The types and column names come from a
qlik-tabledescription-bin header when the endpoint sends one; otherwise
the first column has the function's return type, the others are shown as
duals, and the columns are named Field1, Field2 and so on.

When the call ends with a status other than OK, its code and message go to
standard error and the exit status is 1.`,
		Example: `  ssegw call 127.0.0.1:50055 capabilities
  printf '1,2\n10,20\n' | ssegw call 127.0.0.1:50055 function SumOfRows
  ssegw call gateway.example.com:50052 --tls-dir certs/qlik --engine R function SumOfRows --arg 1,10 --arg 2,20
  echo '[["a", 1], ["b", 2]]' | ssegw call 127.0.0.1:50055 script 'args[0]' --function ScriptEvalExStr --types SN --input json`,
		Args: validateCallArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCall(cmd, flags, args)
		},
	}
	f := cmd.Flags()
	f.StringVar(&flags.tlsDir, "tls-dir", "", "Qlik client certificate folder (root_cert.pem, sse_client_cert.pem, sse_client_key.pem) for mutual TLS; empty for plaintext")
	f.StringVar(&flags.serverName, "server-name", "", "name to verify in the endpoint's certificate, sent as TLS server name and :authority; empty for the host of ADDR")
	f.StringVar(&flags.engine, "engine", "", "engine to call on a gateway, sent in the x-sse-engine header; empty sends no header")
	f.DurationVar(&flags.timeout, "timeout", 30*time.Second, "time limit for the whole call, reading a pipe or file of rows included (rows typed at a terminal are not), such as 30s or 2m; 0 means no limit")
	f.IntVar(&flags.maxMessageSize, "max-message-size", 4<<20, "largest response message accepted, in bytes")
	f.StringVar(&flags.input, "input", "csv", "format of the rows on standard input: csv or json (an array of rows, each an array of values)")
	f.BoolVar(&flags.header, "header", false, "the first CSV line contains column names, not values")
	f.StringArrayVar(&flags.args, "arg", nil, "one column of values, comma-separated and quoted as in CSV; repeat for each parameter; replaces standard input")
	f.IntVar(&flags.bundleSize, "bundle-size", 1000, "rows per message sent")
	f.StringVar(&flags.appID, "app-id", "", "appId sent in the qlik-commonrequestheader-bin header")
	f.StringVar(&flags.userID, "user-id", "", "userId sent in the qlik-commonrequestheader-bin header")
	f.StringVar(&flags.function, "function", "ScriptEval", "script function: "+strings.Join(sseclient.ScriptFunctionNames, ", "))
	f.StringVar(&flags.types, "types", "", "parameter types of an Ex script function, one letter per column: N numeric, S string, D dual, such as NS")
	f.StringSliceVar(&flags.names, "names", nil, "comma-separated parameter names of a script call; default: the CSV header with --header, else arg1, arg2, ...")
	f.BoolVar(&flags.tensor, "tensor", false, "send functionType TENSOR instead of SCALAR with an Eval script function")
	return cmd
}

// validateCallArgs checks the address and call type arguments.
func validateCallArgs(_ *cobra.Command, args []string) error {
	if len(args) < 2 {
		return errors.New("call needs an address and a call type: call ADDR capabilities, call ADDR function NAME or call ADDR script SCRIPT")
	}
	switch args[1] {
	case callCapabilities:
		if len(args) != 2 {
			return fmt.Errorf("call ADDR capabilities takes no more arguments, got %q", args[2:])
		}
	case callFunction:
		if len(args) != 3 {
			return errors.New("call ADDR function needs one function name, such as: call 127.0.0.1:50055 function SumOfRows")
		}
	case callScript:
		if len(args) != 3 {
			return errors.New("call ADDR script needs the script as one argument, quoted, such as: call 127.0.0.1:50055 script 'args[0]'")
		}
		if !utf8.ValidString(args[2]) {
			return errors.New("the script is not UTF-8 text, which its header needs; convert it to UTF-8")
		}
	default:
		return fmt.Errorf("unknown call type %q after the address %q: use capabilities, function or script", args[1], args[0])
	}
	return nil
}

// checkCallFlags rejects flags that do not apply to the call type, and
// invalid flag values, before anything is sent.
func checkCallFlags(cmd *cobra.Command, kind string, flags callFlags) error {
	var unused []string
	switch kind {
	case callCapabilities:
		unused = append(slices.Clone(rowFlags), scriptFlags...)
	case callFunction:
		unused = scriptFlags
	}
	for _, name := range unused {
		if cmd.Flags().Changed(name) {
			return fmt.Errorf("--%s does not apply to a %s call", name, kind)
		}
	}

	// Connection flags.
	if flags.timeout < 0 {
		return fmt.Errorf("invalid --timeout %v: use a positive duration, or 0 for no limit", flags.timeout)
	}
	if flags.maxMessageSize < 1 {
		return fmt.Errorf("invalid --max-message-size %d: use a size in bytes, such as 4194304 for 4 MiB", flags.maxMessageSize)
	}
	if kind == callCapabilities {
		return nil
	}

	// Row flags, and for a script call the script function's flags.
	if flags.bundleSize < 1 {
		return fmt.Errorf("invalid --bundle-size %d: use 1 or more rows", flags.bundleSize)
	}
	if flags.input != "csv" && flags.input != "json" {
		return fmt.Errorf("invalid --input %q: use csv or json", flags.input)
	}
	if flags.header && flags.input != "csv" {
		return errors.New("--header applies only to --input csv")
	}
	if len(flags.args) > 0 && (cmd.Flags().Changed("input") || flags.header) {
		return errors.New("--arg replaces standard input, so it cannot be combined with --input or --header")
	}

	if kind == callScript {
		if _, _, err := parseScriptFlags(cmd, flags); err != nil {
			return err
		}
	}
	return nil
}

// runCall makes the call that args describe and prints what came back.
func runCall(cmd *cobra.Command, flags callFlags, args []string) error {
	address, kind := args[0], args[1]
	if err := checkCallFlags(cmd, kind, flags); err != nil {
		return err
	}

	// The deadline covers everything that follows, reading the input from
	// a pipe or a file too. Someone typing rows at a terminal may take
	// longer than --timeout, so there it starts once the input has ended.
	base := cmd.Context()
	if base == nil {
		base = context.Background()
	}
	ctx, cancel := base, context.CancelFunc(func() {})
	defer func() { cancel() }()
	startDeadline := func() {
		if flags.timeout > 0 {
			ctx, cancel = context.WithTimeout(base, flags.timeout)
		}
	}
	typed := kind != callCapabilities && len(flags.args) == 0 && stdinIsTerminal(cmd)
	if !typed {
		startDeadline()
	}

	// Read the rows before connecting, so that a mistake in them fails
	// without any traffic.
	var table *sseclient.Table
	if kind != callCapabilities {
		var err error
		table, err = readCallInput(ctx, cmd, flags)
		if err != nil {
			return err
		}
	}
	if typed {
		startDeadline()
	}

	// Prepare the client.
	client, err := sseclient.Dial(address, sseclient.Options{
		TLSDir:         flags.tlsDir,
		ServerName:     flags.serverName,
		Engine:         flags.engine,
		MaxMessageSize: flags.maxMessageSize,
	})
	if err != nil {
		err = fmt.Errorf("preparing the connection to %s with --tls-dir %s: %w", address, flags.tlsDir, err)
		switch tlsutil.FolderKind(flags.tlsDir) {
		case tlsutil.ServerFolder:
			err = fmt.Errorf("%w\n%s is a server folder (it contains %s); --tls-dir expects a client folder (%s, %s, %s), such as qlik/ from ssegw certs init",
				err, flags.tlsDir, tlsutil.ServerCertFile, tlsutil.RootCertFile, tlsutil.ClientCertFile, tlsutil.ClientKeyFile)
		case tlsutil.SetFolder:
			err = fmt.Errorf("%w\n%s is a whole certificate set; --tls-dir expects its client folder, %s",
				err, flags.tlsDir, filepath.Join(flags.tlsDir, tlsutil.QlikFolder))
		}
		return err
	}
	defer client.Close()

	// Make the call.
	out := cmd.OutOrStdout()
	var sent []*ssepb.BundledRows
	switch kind {
	case callCapabilities:
		err = callCapabilitiesOf(ctx, out, client)
	case callFunction:
		sent, err = callFunctionByName(ctx, out, client, args[2], table, flags)
	case callScript:
		sent, err = callScriptFunction(ctx, cmd, client, args[2], table, flags)
	}
	// Only the client's own deadline is --timeout: a gateway's
	// request_timeout also ends a call with DeadlineExceeded. The clock
	// decides, not ctx.Err(): the context's timer can fire a moment after
	// gRPC has already ended the call for the same deadline.
	deadline, hasDeadline := ctx.Deadline()
	timedOut := hasDeadline && !time.Now().Before(deadline)
	return reportCallError(cmd.ErrOrStderr(), address, flags, timedOut, sent, err)
}

// readCallInput reads the rows of a function or script call from the --arg
// flags, or else from standard input, until ctx ends. When standard input
// is a terminal, it first prints a hint about the expected input to
// standard error.
func readCallInput(ctx context.Context, cmd *cobra.Command, flags callFlags) (*sseclient.Table, error) {
	if len(flags.args) > 0 {
		table, err := sseclient.ReadColumns(flags.args)
		if err != nil {
			return nil, fmt.Errorf("--arg: %w", err)
		}
		return table, nil
	}
	in := cmd.InOrStdin()
	if stdinIsTerminal(cmd) {
		fmt.Fprintln(cmd.ErrOrStderr(), inputHint(flags))
	}

	// Read in the background, since a read from a terminal or a pipe
	// cannot be interrupted. Should ctx end first, the read is left
	// behind, blocked, until the process exits.
	type result struct {
		table *sseclient.Table
		err   error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		if flags.input == "json" {
			r.table, r.err = sseclient.ReadJSON(in)
		} else {
			r.table, r.err = sseclient.ReadCSV(in, flags.header)
		}
		done <- r
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, fmt.Errorf("standard input: %w", r.err)
		}
		return r.table, nil
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("timed out reading standard input: it did not end within --timeout %v; close it after the rows (Ctrl-D on a terminal), or give the rows with --arg", flags.timeout)
		}
		return nil, fmt.Errorf("reading standard input: %w", ctx.Err())
	}
}

// stdinIsTerminal reports whether the command reads its standard input
// from a terminal.
func stdinIsTerminal(cmd *cobra.Command) bool {
	file, ok := cmd.InOrStdin().(*os.File)
	return ok && isTerminal(file)
}

// inputHint returns the line printed for someone at a terminal: the
// format that the call command reads from it, and how to end the input.
func inputHint(flags callFlags) string {
	format := "CSV, one row a line"
	if flags.input == "json" {
		format = "a JSON array of rows"
	}
	end := "Ctrl-D"
	if runtime.GOOS == "windows" {
		end = "Ctrl-Z then Enter"
	}
	return fmt.Sprintf("Reading the rows from standard input as %s; end them with %s, or give them with --arg instead.", format, end)
}

// callCapabilitiesOf calls GetCapabilities and prints the plugin, its
// functions and the response headers.
func callCapabilitiesOf(ctx context.Context, out io.Writer, client *sseclient.Client) error {
	start := time.Now()
	capabilities, header, err := client.Capabilities(ctx)
	if err != nil {
		return err
	}
	duration := time.Since(start)

	fmt.Fprintf(out, "Plugin: %q, version %q\n", capabilities.GetPluginIdentifier(), capabilities.GetPluginVersion())
	fmt.Fprintf(out, "Scripts allowed: %s\n", yesNo(capabilities.GetAllowScript()))
	if len(capabilities.GetFunctions()) == 0 {
		fmt.Fprintln(out, "Functions: none")
	} else {
		fmt.Fprintln(out, "Functions:")
		rows := [][]string{{"ID", "NAME", "TYPE", "RETURNS", "PARAMETERS"}}
		for _, function := range capabilities.GetFunctions() {
			rows = append(rows, []string{
				strconv.Itoa(int(function.GetFunctionId())), function.GetName(), function.GetFunctionType().String(),
				function.GetReturnType().String(), sseclient.FormatParameters(function.GetParams()),
			})
		}
		writeTable(out, rows)
	}
	printMetadata(out, "Response headers", header)
	fmt.Fprintf(out, "Duration: %v\n", duration.Round(time.Microsecond))
	return nil
}

// callFunctionByName looks the function up in the endpoint's capabilities,
// calls it with the table's rows and prints the result. It returns the
// bundles it sent, if any.
func callFunctionByName(ctx context.Context, out io.Writer, client *sseclient.Client, name string, table *sseclient.Table, flags callFlags) ([]*ssepb.BundledRows, error) {
	// Find the function's id and parameter types, as Qlik does.
	capabilities, _, err := client.Capabilities(ctx)
	if err != nil {
		if _, ok := errors.AsType[*sseclient.ConnectionError](err); ok {
			return nil, err
		}
		return nil, &functionLookupError{function: name, err: err}
	}
	function, err := sseclient.FindFunction(capabilities, name)
	if err != nil {
		return nil, err
	}
	rows, err := table.Rows(function.GetParams())
	if err != nil {
		return nil, fmt.Errorf("input for %s: %w", name, err)
	}

	// Call it.
	bundles := sseclient.Bundle(rows, flags.bundleSize)
	common := &ssepb.CommonRequestHeader{AppId: flags.appID, UserId: flags.userID, Cardinality: int64(len(rows))}
	result, callErr := client.ExecuteFunction(ctx, function.GetFunctionId(), common, bundles)
	if result == nil {
		return bundles, callErr
	}

	fmt.Fprintf(out, "Function: %s (id %d, %s, returns %s)\n", function.GetName(), function.GetFunctionId(), function.GetFunctionType(), function.GetReturnType())
	fmt.Fprintf(out, "Parameters: %s\n", sseclient.FormatParameters(function.GetParams()))
	printCallResult(out, common, len(bundles), function.GetReturnType(), result)
	return bundles, callErr
}

// functionLookupError is a failed GetCapabilities call made to look up a
// function by name, before the function itself is called.
type functionLookupError struct {
	function string
	err      error
}

func (e *functionLookupError) Error() string {
	return fmt.Sprintf("looking up function %s through GetCapabilities: %v", e.function, e.err)
}

func (e *functionLookupError) Unwrap() error { return e.err }

// callScriptFunction builds the script request header of the --function
// script function, calls EvaluateScript with the table's rows and prints
// the result. It returns the bundles it sent, if any.
func callScriptFunction(ctx context.Context, cmd *cobra.Command, client *sseclient.Client, script string, table *sseclient.Table, flags callFlags) ([]*ssepb.BundledRows, error) {
	header, err := scriptHeader(cmd, script, table, flags)
	if err != nil {
		return nil, err
	}
	rows, err := table.Rows(header.GetParams())
	if err != nil {
		return nil, fmt.Errorf("input for %s: %w", flags.function, err)
	}

	// Call it.
	bundles := sseclient.Bundle(rows, flags.bundleSize)
	common := &ssepb.CommonRequestHeader{AppId: flags.appID, UserId: flags.userID, Cardinality: int64(len(rows))}
	result, callErr := client.EvaluateScript(ctx, header, common, bundles)
	if result == nil {
		return bundles, callErr
	}

	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "Script function: %s (%s, returns %s)\n", ssepb.ScriptFunctionName(header), header.GetFunctionType(), header.GetReturnType())
	fmt.Fprintf(out, "Script: %q\n", header.GetScript())
	fmt.Fprintf(out, "Parameters: %s\n", sseclient.FormatParameters(header.GetParams()))
	printCallResult(out, common, len(bundles), header.GetReturnType(), result)
	return bundles, callErr
}

// scriptHeader returns the script request header that Qlik sends for the
// --function script function with the table's columns as parameters.
func scriptHeader(cmd *cobra.Command, script string, table *sseclient.Table, flags callFlags) (*ssepb.ScriptRequestHeader, error) {
	function, types, err := parseScriptFlags(cmd, flags)
	if err != nil {
		return nil, err
	}

	// Check the Ex function's types against the columns, or give every
	// column the plain function's type.
	if function.Ex {
		if table.Len() > 0 && table.Width() != len(types) {
			return nil, fmt.Errorf("--types %q gives %s, but the input has %s, so give one letter per column",
				flags.types, count(len(types), "parameter type"), count(table.Width(), "column"))
		}
	} else {
		types = make([]ssepb.DataType, table.Width())
		for i := range types {
			types[i] = function.PlainType()
		}
	}

	// Name the parameters.
	names := table.Names
	if len(flags.names) > 0 {
		if len(flags.names) != len(types) {
			return nil, fmt.Errorf("--names gives %s for %s, so give one name per column", count(len(flags.names), "name"), count(len(types), "parameter"))
		}
		names = flags.names
	}
	header := function.Header(script, types, names)

	// A plugin learns the function only from the header, so check that the
	// header names it. An Ex function whose types all equal the plain
	// function's sends the plain function's header, as ssepb.ScriptFunctionName
	// describes.
	if named := ssepb.ScriptFunctionName(header); named != function.Name {
		if !function.Ex {
			return nil, fmt.Errorf("building the script header for %s: the header reads as %s", function.Name, named)
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "Note: %s with --types %q sends the same header as %s, so the endpoint sees a %s call.\n", function.Name, flags.types, named, named)
	}
	return header, nil
}

// parseScriptFlags reads --function, --tensor and --types. The types are
// nil for a script function without Ex.
func parseScriptFlags(cmd *cobra.Command, flags callFlags) (sseclient.ScriptFunction, []ssepb.DataType, error) {
	function, err := sseclient.ParseScriptFunction(flags.function)
	if err != nil {
		return function, nil, fmt.Errorf("--function: %w", err)
	}
	if flags.tensor {
		if function.FunctionType == ssepb.FunctionType_AGGREGATION {
			return function, nil, fmt.Errorf("--tensor applies to the Eval script functions, and %s is an aggregation", function.Name)
		}
		function.FunctionType = ssepb.FunctionType_TENSOR
	}
	if !function.Ex {
		if cmd.Flags().Changed("types") {
			return function, nil, fmt.Errorf("--types applies only to the Ex script functions (ScriptEvalEx, ScriptEvalExStr, ScriptAggrEx, ScriptAggrExStr), not to %s", function.Name)
		}
		return function, nil, nil
	}
	if !cmd.Flags().Changed("types") {
		return function, nil, fmt.Errorf("%s needs --types, one letter per parameter: N numeric, S string, D dual, such as --types NS", function.Name)
	}
	types, err := sseclient.ParseParameterTypes(flags.types)
	if err != nil {
		return function, nil, fmt.Errorf("--types: %w", err)
	}
	return function, types, nil
}

// printCallResult prints what a function or script call sent and returned.
// returnType is the type of the first returned column when the endpoint
// sends no table description.
func printCallResult(out io.Writer, common *ssepb.CommonRequestHeader, bundles int, returnType ssepb.DataType, result *sseclient.Result) {
	fmt.Fprintf(out, "Request: %s in %s, app id %q, user id %q\n",
		count(int(common.GetCardinality()), "row"), count(bundles, "bundle"), common.GetAppId(), common.GetUserId())
	printMetadata(out, "Response headers", result.Header)

	// The rows, typed and named by the table description when there is a
	// valid one.
	rows := result.Rows()
	fmt.Fprintf(out, "Response: %s in %s\n", count(len(rows), "row"), count(len(result.Bundles), "bundle"))
	if len(rows) > 0 {
		description, _ := ssepb.ReadTableDescription(result.Header)
		width := 0
		for _, row := range rows {
			width = max(width, len(row.GetDuals()))
		}
		types := make([]ssepb.DataType, width)
		titles := []string{"#"}
		for i := range width {
			types[i] = ssepb.DataType_DUAL
			if i == 0 {
				types[i] = returnType
			}
			title := fmt.Sprintf("Field%d", i+1)
			if fields := description.GetFields(); i < len(fields) {
				types[i] = fields[i].GetDataType()
				title = fields[i].GetName()
			}
			titles = append(titles, title)
		}
		lines := [][]string{titles}
		for i, row := range rows {
			cells := []string{strconv.Itoa(i + 1)}
			for j, dual := range row.GetDuals() {
				cells = append(cells, formatDual(dual, types[j]))
			}
			lines = append(lines, cells)
		}
		writeTable(out, lines)
	}

	printMetadata(out, "Trailers", result.Trailer)
	fmt.Fprintf(out, "Duration: %v\n", result.Duration.Round(time.Microsecond))
}

// printMetadata prints response headers or trailers, one line per value,
// in the order of their keys, with the headers of the SSE protocol
// explained. gRPC's own content-type header is left out.
func printMetadata(out io.Writer, title string, md metadata.MD) {
	var keys []string
	for key := range md {
		if key != "content-type" {
			keys = append(keys, key)
		}
	}
	if len(keys) == 0 {
		fmt.Fprintf(out, "%s: none\n", title)
		return
	}
	slices.Sort(keys)
	fmt.Fprintf(out, "%s:\n", title)
	for _, key := range keys {
		if key == ssepb.TableDescriptionKey {
			printTableDescription(out, md)
			continue
		}
		for _, value := range md[key] {
			switch {
			case key == ssepb.CacheKey && value == ssepb.CacheNoStore:
				fmt.Fprintf(out, "  %s: %s (Qlik does not cache the result)\n", key, value)
			case strings.HasSuffix(key, "-bin"):
				fmt.Fprintf(out, "  %s: %s (base64)\n", key, base64.StdEncoding.EncodeToString([]byte(value)))
			default:
				fmt.Fprintf(out, "  %s: %s\n", key, value)
			}
		}
	}
}

// printTableDescription prints the decoded qlik-tabledescription-bin
// header of md, or why it cannot be decoded.
func printTableDescription(out io.Writer, md metadata.MD) {
	description, err := ssepb.ReadTableDescription(md)
	if err != nil {
		fmt.Fprintf(out, "  %s: %v\n", ssepb.TableDescriptionKey, err)
		return
	}
	fmt.Fprintf(out, "  %s: table %q, numberOfRows %d, %s\n", ssepb.TableDescriptionKey,
		description.GetName(), description.GetNumberOfRows(), count(len(description.GetFields()), "field"))
	for i, field := range description.GetFields() {
		fmt.Fprintf(out, "    field %d: %q %s", i+1, field.GetName(), field.GetDataType())
		if tags := field.GetTags(); len(tags) > 0 {
			fmt.Fprintf(out, ", tags %s", strings.Join(tags, ", "))
		}
		fmt.Fprintln(out)
	}
}

// reportCallError turns the error of a call into what the command returns:
// a connection failure with what to check, or, for a status other than OK,
// its code and message on stderr and exit status 1. sent contains the
// bundles that the call sent.
func reportCallError(stderr io.Writer, address string, flags callFlags, timedOut bool, sent []*ssepb.BundledRows, err error) error {
	if err == nil {
		return nil
	}
	var connectionErr *sseclient.ConnectionError
	if errors.As(err, &connectionErr) {
		if connectionErr.Closed {
			return fmt.Errorf("%w\nThe endpoint may be stopping or restarting; call again once it is back.", err)
		}
		return fmt.Errorf("%w\n%s", err, connectionHint(address, flags, err))
	}
	if st, ok := status.FromError(err); ok {
		if lookup, ok := errors.AsType[*functionLookupError](err); ok {
			// status.FromError returns the wrapper's text as the message.
			st = status.Convert(lookup.err)
			fmt.Fprintf(stderr, "looking up function %s through GetCapabilities failed, so the function was not called: status %s: %s\n",
				lookup.function, st.Code(), st.Message())
		} else {
			fmt.Fprintf(stderr, "call ended with status %s: %s\n", st.Code(), st.Message())
		}
		if st.Code() == codes.DeadlineExceeded && timedOut {
			fmt.Fprintf(stderr, "the call took longer than --timeout %v\n", flags.timeout)
		}
		if size, certain, ok := responseOverLimit(st, sent, flags.maxMessageSize); ok {
			if certain {
				fmt.Fprintf(stderr, "the response had a message of %d bytes, more than this command's --max-message-size %d; call again with --max-message-size %d or more\n",
					size, flags.maxMessageSize, size)
			} else {
				fmt.Fprintf(stderr, "a message of %d bytes exceeded the limit of %d bytes: either the endpoint's, for a request message of that size, or this command's --max-message-size, for a response; if it was a response, call again with --max-message-size %d or more\n",
					size, flags.maxMessageSize, size)
			}
		}
		return exitError{code: 1}
	}
	return err
}

// responseOverLimit reports whether st is gRPC's error for a message
// larger than --max-message-size, and returns the message's size. An
// endpoint that rejects a request message over its own limit sends a status
// with the same text (as of grpc-go v1.85), so the size decides. A size
// that no message in sent has is a response's, and certain is true.
// Otherwise either limit may be the one exceeded.
func responseOverLimit(st *status.Status, sent []*ssepb.BundledRows, limit int) (size int, certain, ok bool) {
	if st.Code() != codes.ResourceExhausted {
		return 0, false, false
	}
	_, text, found := strings.Cut(st.Message(), "received message larger than max (")
	if !found {
		return 0, false, false
	}
	var messageLimit int
	if n, _ := fmt.Sscanf(text, "%d vs. %d)", &size, &messageLimit); n != 2 || messageLimit != limit {
		return 0, false, false
	}
	for _, bundle := range sent {
		if proto.Size(bundle) == size {
			return size, false, true
		}
	}
	return size, true, true
}

// connectionHint returns what to check when the client could not connect
// with err. The endpoint's TLS alerts, as crypto/tls words them (Go 1.26),
// name the cause. A server that closes without one after the handshake,
// as Go's does for a client certificate it does not trust, leaves only a
// broken pipe or a reset.
func connectionHint(address string, flags callFlags, err error) string {
	reason := tlsutil.DialFailureReason(err)
	switch {
	case strings.Contains(err.Error(), "connection refused"), strings.Contains(err.Error(), "actively refused"):
		// Nothing listens there: no certificate can be the cause. gRPC
		// passes only the dial error's text (grpc-go v1.85); Windows words
		// it "No connection could be made because the target machine
		// actively refused it".
		return fmt.Sprintf("Nothing listens at %s: check the address, and that the plugin or gateway runs.", address)
	case flags.tlsDir != "" && reason == tlsutil.DialNotTLS:
		return fmt.Sprintf("%s does not speak TLS: call it without --tls-dir.", address)
	case flags.tlsDir != "" && reason == tlsutil.DialClientExpired:
		return fmt.Sprintf("The endpoint refused the client certificate in %s as expired or not valid yet; check its dates with ssegw certs check, and renew it.", flags.tlsDir)
	case flags.tlsDir != "" && (reason == tlsutil.DialClientRejected || reason == tlsutil.DialClosed):
		return fmt.Sprintf("The endpoint most likely refused the client certificate in %s: its CA is not one the endpoint trusts (for the gateway, the listener's client CA), or the certificate lacks the clientAuth usage. Check it with: ssegw certs check %s",
			flags.tlsDir, flags.tlsDir)
	}
	if flags.tlsDir == "" {
		return fmt.Sprintf("Check that %s is the address of a running plugin or gateway. If the endpoint requires TLS, pass --tls-dir with a Qlik client certificate folder (root_cert.pem, sse_client_cert.pem, sse_client_key.pem).", address)
	}
	switch reason {
	case tlsutil.DialServerUnknownAuthority:
		return fmt.Sprintf("The endpoint's certificate is not signed by root_cert.pem in %s. If the endpoint's CA was replaced, as by certs init --new-ca, call with the client folder made with the new CA.", flags.tlsDir)
	case tlsutil.DialServerName:
		return nameHint(address, flags.serverName) + " " + nameBeforeCA
	case tlsutil.DialServerExpired:
		return "The endpoint's certificate, or one of its chain, has expired or is not valid yet by this machine's clock: check the dates with ssegw certs check on the endpoint's folder, and this machine's clock."
	}
	return fmt.Sprintf("Check that %s is the address of a running plugin or gateway that accepts TLS, that root_cert.pem in %s is the CA that signed the endpoint's certificate, and that the endpoint accepts the client certificate sse_client_cert.pem. %s",
		address, flags.tlsDir, nameHint(address, flags.serverName))
}

// nameBeforeCA follows a hint about a name that a certificate lacks.
const nameBeforeCA = "Go checks the name before the CA, so a CA that did not sign the certificate shows only once the name matches."

// nameHint returns the name that the endpoint's certificate must list for
// a call to address, and how to call with another one.
func nameHint(address, serverName string) string {
	host, _, err := net.SplitHostPort(address)
	switch {
	case serverName != "":
		return fmt.Sprintf("The endpoint's certificate must list --server-name %s.", serverName)
	case err != nil:
		return "The endpoint's certificate must list the name called, or pass --server-name with a name it lists."
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return fmt.Sprintf("Go matches the address %s only against IP subjectAltNames; if the certificate lists it as a DNS name, or not at all, pass --server-name with a name it lists.", host)
	}
	return fmt.Sprintf("The endpoint's certificate must list %s, or pass --server-name with a name it lists.", host)
}

// formatDual returns a value as Qlik reads a column of dataType: the number
// for NUMERIC, the text for STRING, and both for DUAL, as "text (number)".
// Text with tabs or line breaks is quoted, to keep the table readable.
func formatDual(dual *ssepb.Dual, dataType ssepb.DataType) string {
	text := dual.GetStrData()
	if strings.ContainsAny(text, "\t\r\n") {
		text = strconv.Quote(text)
	}
	number := formatNumber(dual.GetNumData())
	switch dataType {
	case ssepb.DataType_NUMERIC:
		return number
	case ssepb.DataType_STRING:
		return text
	}
	switch {
	case text == "":
		return number
	case math.IsNaN(dual.GetNumData()) || text == number:
		return text
	}
	return text + " (" + number + ")"
}

// formatNumber formats a number without exponent unless it is very large
// or very small.
func formatNumber(number float64) string {
	magnitude := math.Abs(number)
	if magnitude == 0 || (magnitude >= 1e-6 && magnitude < 1e15) {
		return strconv.FormatFloat(number, 'f', -1, 64)
	}
	return strconv.FormatFloat(number, 'g', -1, 64)
}

// writeTable writes rows of cells as aligned columns, each line indented
// by two spaces and without trailing spaces.
func writeTable(out io.Writer, rows [][]string) {
	var aligned bytes.Buffer
	writer := tabwriter.NewWriter(&aligned, 0, 0, 2, ' ', 0)
	for _, row := range rows {
		fmt.Fprintln(writer, strings.Join(row, "\t"))
	}
	writer.Flush()
	// An empty last cell would leave the padding of the cell before it.
	for line := range strings.Lines(aligned.String()) {
		io.WriteString(out, "  "+strings.TrimRight(line, " \n")+"\n")
	}
}

// count returns n and the noun, in the plural unless n is 1.
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
