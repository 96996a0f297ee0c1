package sseclient

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ssegw/ssegw/ssepb"
)

// describeRows writes each row as its duals, "number|text", separated by
// spaces, so that rows with NaN can be compared.
func describeRows(rows []*ssepb.Row) []string {
	var described []string
	for _, row := range rows {
		var duals []string
		for _, dual := range row.GetDuals() {
			duals = append(duals, strconv.FormatFloat(dual.GetNumData(), 'g', -1, 64)+"|"+dual.GetStrData())
		}
		described = append(described, strings.Join(duals, " "))
	}
	return described
}

// params returns parameters p1, p2, ... of the given types.
func params(types ...ssepb.DataType) []*ssepb.Parameter {
	var list []*ssepb.Parameter
	for i, dataType := range types {
		list = append(list, &ssepb.Parameter{Name: "p" + strconv.Itoa(i+1), DataType: dataType})
	}
	return list
}

const (
	numeric = ssepb.DataType_NUMERIC
	text    = ssepb.DataType_STRING
	dual    = ssepb.DataType_DUAL
)

func TestReadCSVRows(t *testing.T) {
	tests := []struct {
		name      string
		input     string
		header    bool
		params    []*ssepb.Parameter
		want      []string
		wantNames []string
	}{
		{
			name:   "numbers",
			input:  "1,2\n10, 20\n0.5,-0.25\n",
			params: params(numeric, numeric),
			want:   []string{"1| 2|", "10| 20|", "0.5| -0.25|"},
		},
		{
			name:      "header line",
			input:     "a,b\n1,x\n",
			header:    true,
			params:    params(numeric, text),
			want:      []string{"1| 0|x"},
			wantNames: []string{"a", "b"},
		},
		{
			name:   "empty number is NaN",
			input:  "\"\"\n",
			params: params(numeric),
			want:   []string{"NaN|"},
		},
		{
			name:   "strings keep spaces and quotes",
			input:  "\" a, b \"\n\"\"\n",
			params: params(text),
			want:   []string{"0| a, b ", "0|"},
		},
		{
			name:   "duals",
			input:  "3,Jan\n",
			params: params(dual, dual),
			want:   []string{"3|3 NaN|Jan"},
		},
		{
			name:   "no input",
			input:  "",
			params: params(numeric),
			want:   nil,
		},
		{
			name:      "byte order mark before the header",
			input:     "\ufeffa,b\n1,x\n",
			header:    true,
			params:    params(numeric, text),
			want:      []string{"1| 0|x"},
			wantNames: []string{"a", "b"},
		},
		{
			name:   "byte order mark before a number",
			input:  "\ufeff1\n",
			params: params(numeric),
			want:   []string{"1|"},
		},
		{
			name:   "byte order mark alone",
			input:  "\ufeff",
			params: params(numeric),
			want:   nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			table, err := ReadCSV(strings.NewReader(tt.input), tt.header)
			if err != nil {
				t.Fatalf("ReadCSV(%q) error: %v", tt.input, err)
			}
			rows, err := table.Rows(tt.params)
			if err != nil {
				t.Fatalf("Rows error: %v", err)
			}
			if diff := cmp.Diff(tt.want, describeRows(rows)); diff != "" {
				t.Errorf("rows of %q (-want +got):\n%s", tt.input, diff)
			}
			if diff := cmp.Diff(tt.wantNames, table.Names); diff != "" {
				t.Errorf("Names (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReadJSONRows(t *testing.T) {
	tests := []struct {
		name   string
		input  string
		params []*ssepb.Parameter
		want   []string
	}{
		{
			name:   "numbers",
			input:  `[[1, 2], [1.5e3, "4"], [null, -1]]`,
			params: params(numeric, numeric),
			want:   []string{"1| 2|", "1500| 4|", "NaN| -1|"},
		},
		{
			name:   "strings",
			input:  `[["a"], [12.50], [null]]`,
			params: params(text),
			want:   []string{"0|a", "0|12.50", "0|"},
		},
		{
			name:   "duals",
			input:  `[[1.50], ["Jan"], ["7"], [[1, "Jan"]], [null]]`,
			params: params(dual),
			want:   []string{"1.5|1.50", "NaN|Jan", "7|7", "1|Jan", "NaN|"},
		},
		{
			name:   "rows without values",
			input:  `[[], []]`,
			params: nil,
			want:   []string{"", ""},
		},
		{
			name:   "no rows",
			input:  ` [] `,
			params: params(numeric),
			want:   nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			table, err := ReadJSON(strings.NewReader(tt.input))
			if err != nil {
				t.Fatalf("ReadJSON(%s) error: %v", tt.input, err)
			}
			rows, err := table.Rows(tt.params)
			if err != nil {
				t.Fatalf("Rows error: %v", err)
			}
			if diff := cmp.Diff(tt.want, describeRows(rows)); diff != "" {
				t.Errorf("rows of %s (-want +got):\n%s", tt.input, diff)
			}
		})
	}
}

func TestReadColumnsRows(t *testing.T) {
	table, err := ReadColumns([]string{"1,2,3", `a,"b,c",`})
	if err != nil {
		t.Fatalf("ReadColumns error: %v", err)
	}
	if table.Len() != 3 || table.Width() != 2 {
		t.Errorf("table has %d rows of %d columns, want 3 of 2", table.Len(), table.Width())
	}
	rows, err := table.Rows(params(numeric, text))
	if err != nil {
		t.Fatalf("Rows error: %v", err)
	}
	want := []string{"1| 0|a", "2| 0|b,c", "3| 0|"}
	if diff := cmp.Diff(want, describeRows(rows)); diff != "" {
		t.Errorf("rows (-want +got):\n%s", diff)
	}
}

func TestReadRejectsBadInput(t *testing.T) {
	tests := []struct {
		name    string
		read    func() (*Table, error)
		params  []*ssepb.Parameter
		wantErr string
		invalid bool // wraps ErrInvalidValue
	}{
		{
			name:    "CSV text for a number",
			read:    func() (*Table, error) { return ReadCSV(strings.NewReader("1,2\nx,3\n"), false) },
			params:  params(numeric, numeric),
			wantErr: `line 2, column 1 (parameter p1, NUMERIC): invalid value: "x" is not a number`,
			invalid: true,
		},
		{
			name:    "CSV number out of range",
			read:    func() (*Table, error) { return ReadCSV(strings.NewReader("1e999\n"), false) },
			params:  params(numeric),
			wantErr: `line 1, column 1 (parameter p1, NUMERIC): invalid value: "1e999" is out of range: a number's magnitude must be at most 1.7976931348623157e+308`,
			invalid: true,
		},
		{
			name:    "JSON number out of range",
			read:    func() (*Table, error) { return ReadJSON(strings.NewReader(`[[-1e999]]`)) },
			params:  params(dual),
			wantErr: `row 1, column 1 (parameter p1, DUAL): invalid value: "-1e999" is out of range`,
			invalid: true,
		},
		{
			name:    "JSON null for the rows",
			read:    func() (*Table, error) { return ReadJSON(strings.NewReader("null\n")) },
			wantErr: "reading JSON: null is not an array of rows",
		},
		{
			name:    "CSV line numbers count the header",
			read:    func() (*Table, error) { return ReadCSV(strings.NewReader("a\n1\nb\n"), true) },
			params:  params(numeric),
			wantErr: `line 3, column 1 (parameter p1, NUMERIC): invalid value: "b" is not a number`,
			invalid: true,
		},
		{
			name:    "CSV text that is not UTF-8",
			read:    func() (*Table, error) { return ReadCSV(strings.NewReader("a\nCaf\xe9\n"), false) },
			wantErr: `line 2, column 1: invalid value: not UTF-8 text`,
			invalid: true,
		},
		{
			name:    "CSV header that is not UTF-8",
			read:    func() (*Table, error) { return ReadCSV(strings.NewReader("x,\xff\n1,2\n"), true) },
			wantErr: `line 1, column 2: invalid value: not UTF-8 text`,
			invalid: true,
		},
		{
			name:    "column value that is not UTF-8",
			read:    func() (*Table, error) { return ReadColumns([]string{"1,2", "a,\xe9"}) },
			wantErr: `row 2, column 2: invalid value: not UTF-8 text`,
			invalid: true,
		},
		{
			name:    "CSV rows of unequal width",
			read:    func() (*Table, error) { return ReadCSV(strings.NewReader("1,2\n3\n"), false) },
			wantErr: "reading CSV: record on line 2: wrong number of fields",
		},
		{
			name:    "too few columns for the parameters",
			read:    func() (*Table, error) { return ReadCSV(strings.NewReader("1\n"), false) },
			params:  params(numeric, text),
			wantErr: "line 1 has 1 value, expected 2, one for each parameter (p1:NUMERIC, p2:STRING)",
		},
		{
			name:    "JSON that is not an array of arrays",
			read:    func() (*Table, error) { return ReadJSON(strings.NewReader(`{"a": 1}`)) },
			wantErr: "reading JSON: expected an array of rows",
		},
		{
			name:    "JSON with trailing data",
			read:    func() (*Table, error) { return ReadJSON(strings.NewReader(`[[1]] [[2]]`)) },
			wantErr: "reading JSON: unexpected data after the array of rows",
		},
		{
			name:    "JSON rows of unequal width",
			read:    func() (*Table, error) { return ReadJSON(strings.NewReader(`[[1, 2], [3]]`)) },
			wantErr: "reading JSON: row 2 has 1 value, but row 1 has 2",
		},
		{
			name:    "JSON boolean for a number",
			read:    func() (*Table, error) { return ReadJSON(strings.NewReader(`[[true]]`)) },
			params:  params(numeric),
			wantErr: "row 1, column 1 (parameter p1, NUMERIC): invalid value: true is not a number",
			invalid: true,
		},
		{
			name:    "JSON object for a string",
			read:    func() (*Table, error) { return ReadJSON(strings.NewReader(`[[{}]]`)) },
			params:  params(text),
			wantErr: "row 1, column 1 (parameter p1, STRING): invalid value: {} is not a string",
			invalid: true,
		},
		{
			name:    "JSON dual pair of the wrong shape",
			read:    func() (*Table, error) { return ReadJSON(strings.NewReader(`[[["Jan", 1]]]`)) },
			params:  params(dual),
			wantErr: `row 1, column 1 (parameter p1, DUAL): invalid value: ["Jan", 1] is not a [number, "text"] pair`,
			invalid: true,
		},
		{
			name:    "JSON string that is not a number",
			read:    func() (*Table, error) { return ReadJSON(strings.NewReader(`[["ten"]]`)) },
			params:  params(numeric),
			wantErr: `row 1, column 1 (parameter p1, NUMERIC): invalid value: "ten" is not a number`,
			invalid: true,
		},
		{
			name:    "columns of unequal length",
			read:    func() (*Table, error) { return ReadColumns([]string{"1,2", "3"}) },
			wantErr: "reading columns: column 2 has 1 value, but column 1 has 2",
		},
		{
			name:    "column over two lines",
			read:    func() (*Table, error) { return ReadColumns([]string{"1\n2"}) },
			wantErr: `reading column 1 "1\n2": a column is one line of comma-separated values`,
		},
		{
			name:    "column value out of range",
			read:    func() (*Table, error) { return ReadColumns([]string{"1,2", "3,x"}) },
			params:  params(numeric, numeric),
			wantErr: `row 2, column 2 (parameter p2, NUMERIC): invalid value: "x" is not a number`,
			invalid: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			table, err := tt.read()
			if err == nil {
				_, err = table.Rows(tt.params)
			}
			if err == nil {
				t.Fatalf("no error, want %q", tt.wantErr)
			}
			if !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Errorf("error = %q, want it to start with %q", err, tt.wantErr)
			}
			if got := errors.Is(err, ErrInvalidValue); got != tt.invalid {
				t.Errorf("errors.Is(%q, ErrInvalidValue) = %v, want %v", err, got, tt.invalid)
			}
		})
	}
}

func TestBundleSplitsRows(t *testing.T) {
	rows := make([]*ssepb.Row, 5)
	for i := range rows {
		rows[i] = &ssepb.Row{Duals: []*ssepb.Dual{{NumData: float64(i)}}}
	}
	tests := []struct {
		name string
		rows []*ssepb.Row
		size int
		want []int
	}{
		{name: "even", rows: rows[:4], size: 2, want: []int{2, 2}},
		{name: "remainder", rows: rows, size: 2, want: []int{2, 2, 1}},
		{name: "larger than rows", rows: rows, size: 1000, want: []int{5}},
		{name: "zero size is one bundle", rows: rows, size: 0, want: []int{5}},
		{name: "no rows", rows: nil, size: 10, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bundles := Bundle(tt.rows, tt.size)
			var sizes []int
			var all []*ssepb.Row
			for _, bundle := range bundles {
				sizes = append(sizes, len(bundle.GetRows()))
				all = append(all, bundle.GetRows()...)
			}
			if diff := cmp.Diff(tt.want, sizes); diff != "" {
				t.Errorf("Bundle(%d rows, %d) sizes (-want +got):\n%s", len(tt.rows), tt.size, diff)
			}
			if diff := cmp.Diff(describeRows(tt.rows), describeRows(all)); diff != "" {
				t.Errorf("rows in bundles (-want +got):\n%s", diff)
			}
		})
	}
}
