package sseclient

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/ssegw/ssegw/ssepb"
)

// ErrInvalidValue is returned, wrapped, when an input value cannot take
// the type of its parameter, such as text for a NUMERIC parameter.
var ErrInvalidValue = errors.New("invalid value")

// Table is argument rows as read from CSV, JSON or one list per column,
// before they take the types of a function's parameters. Reading and
// converting are separate steps because a script call learns how many
// parameters it has from the input.
type Table struct {
	// Names are the column names of a CSV header line; nil without one.
	Names []string

	rows []inputRow
}

// inputRow is one row of a Table.
type inputRow struct {
	// position names the row in error messages: "line 3" or "row 2".
	position string
	cells    []cell
}

// cell is one input value: text from CSV or a column list, or a JSON
// value kept undecoded until its parameter type is known.
type cell struct {
	text string
	json json.RawMessage // nil for text
}

// Len returns the number of rows.
func (t *Table) Len() int {
	return len(t.rows)
}

// Width returns the number of columns of the first row, or 0 for a table
// without rows. Every reader rejects rows of unequal width.
func (t *Table) Width() int {
	if len(t.rows) == 0 {
		return 0
	}
	return len(t.rows[0].cells)
}

// ReadCSV reads rows of comma-separated values, one row a line, with
// quoting as in RFC 4180. With header true the first line holds column
// names, which go to Names instead of the rows. encoding/csv skips empty
// lines, so an empty string in a one-column file is written "". A UTF-8
// byte order mark at the start, such as Excel writes in its "CSV UTF-8"
// format, is skipped.
func ReadCSV(r io.Reader, header bool) (*Table, error) {
	buffered := bufio.NewReader(r)
	if start, err := buffered.Peek(len(utf8BOM)); err == nil && string(start) == utf8BOM {
		buffered.Discard(len(utf8BOM))
	}
	reader := csv.NewReader(buffered)
	table := &Table{}
	for {
		record, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return table, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading CSV: %w", err)
		}
		line, _ := reader.FieldPos(0)
		position := fmt.Sprintf("line %d", line)
		for i, text := range record {
			if err := checkUTF8(position, i, text); err != nil {
				return nil, err
			}
		}
		if header && table.Names == nil {
			table.Names = record
			continue
		}
		row := inputRow{position: position, cells: make([]cell, len(record))}
		for i, text := range record {
			row.cells[i] = cell{text: text}
		}
		table.rows = append(table.rows, row)
	}
}

// utf8BOM is the UTF-8 encoding of the byte order mark U+FEFF.
const utf8BOM = "\ufeff"

// ReadJSON reads a JSON array of rows, each an array of values, such as
// [[1, "a"], [2, "b"]]. An empty array, [], is a table without rows.
// Table.Rows describes which JSON values each parameter type accepts.
func ReadJSON(r io.Reader) (*Table, error) {
	decoder := json.NewDecoder(r)
	var rows [][]json.RawMessage
	if err := decoder.Decode(&rows); err != nil {
		return nil, fmt.Errorf("reading JSON: expected an array of rows, each an array of values, such as [[1, \"a\"], [2, \"b\"]]: %w", err)
	}
	if rows == nil {
		// encoding/json decodes null into a nil slice without error.
		return nil, errors.New("reading JSON: null is not an array of rows; send an array, such as [[1, \"a\"], [2, \"b\"]], or [] for no rows")
	}
	if _, err := decoder.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("reading JSON: unexpected data after the array of rows; send one array, such as [[1, \"a\"], [2, \"b\"]]")
	}
	table := &Table{}
	for i, values := range rows {
		if i > 0 && len(values) != len(rows[0]) {
			return nil, fmt.Errorf("reading JSON: row %d has %s, but row 1 has %d; every row needs one value per parameter", i+1, countValues(len(values)), len(rows[0]))
		}
		row := inputRow{position: fmt.Sprintf("row %d", i+1), cells: make([]cell, len(values))}
		for j, value := range values {
			row.cells[j] = cell{json: value}
		}
		table.rows = append(table.rows, row)
	}
	return table, nil
}

// ReadColumns reads one column from each string, its values separated by
// commas and quoted as in CSV, so that ReadColumns([]string{"1,2", "3,4"})
// gives the rows (1, 3) and (2, 4). An empty string is a column without
// values.
func ReadColumns(columns []string) (*Table, error) {
	values := make([][]string, len(columns))
	for i, column := range columns {
		reader := csv.NewReader(strings.NewReader(column))
		record, err := reader.Read()
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("reading column %d %q: %w", i+1, column, err)
		}
		if _, err := reader.Read(); !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("reading column %d %q: a column is one line of comma-separated values", i+1, column)
		}
		if i > 0 && len(record) != len(values[0]) {
			return nil, fmt.Errorf("reading columns: column %d has %s, but column 1 has %d; every column needs one value per row", i+1, countValues(len(record)), len(values[0]))
		}
		values[i] = record
	}

	// Turn the columns into rows.
	table := &Table{}
	if len(values) == 0 {
		return table, nil
	}
	for j := range values[0] {
		row := inputRow{position: fmt.Sprintf("row %d", j+1), cells: make([]cell, len(values))}
		for i := range values {
			if err := checkUTF8(row.position, i, values[i][j]); err != nil {
				return nil, err
			}
			row.cells[i] = cell{text: values[i][j]}
		}
		table.rows = append(table.rows, row)
	}
	return table, nil
}

// checkUTF8 rejects text that is not UTF-8, which protobuf requires of
// strings: the call would otherwise fail only once under way, when its
// request could not be encoded. column counts from 0.
func checkUTF8(position string, column int, text string) error {
	if utf8.ValidString(text) {
		return nil
	}
	return fmt.Errorf("%s, column %d: %w: not UTF-8 text; convert the input to UTF-8, for example with iconv -f WINDOWS-1252 -t UTF-8", position, column+1, ErrInvalidValue)
}

// Rows converts the table into rows for a function with these parameters,
// one column a parameter in order. A NUMERIC parameter gets only a number,
// a STRING parameter only text, and a DUAL parameter both.
//
// From text (CSV or columns): a NUMERIC value is a number as
// strconv.ParseFloat reads it, surrounding spaces allowed, and an empty
// value is NaN. A STRING value is the text unchanged. A DUAL value keeps the
// text and its number, or NaN when the text is not a number.
//
// From JSON: a NUMERIC value is a number, a string holding a number, or
// null (NaN). A STRING value is a string, a number (its JSON text), or null
// (empty). A DUAL value is a number (with its JSON text as the string), a
// string (with its number, or NaN), a [number, "text"] pair, or null (NaN
// and empty).
func (t *Table) Rows(params []*ssepb.Parameter) ([]*ssepb.Row, error) {
	rows := make([]*ssepb.Row, len(t.rows))
	for i, input := range t.rows {
		if len(input.cells) != len(params) {
			return nil, fmt.Errorf("%s has %s, expected %d, one for each parameter (%s)", input.position, countValues(len(input.cells)), len(params), FormatParameters(params))
		}
		row := &ssepb.Row{Duals: make([]*ssepb.Dual, len(params))}
		for j, value := range input.cells {
			dual, err := value.dual(params[j].GetDataType())
			if err != nil {
				return nil, fmt.Errorf("%s, column %d (parameter %s, %s): %w", input.position, j+1, params[j].GetName(), params[j].GetDataType(), err)
			}
			row.Duals[j] = dual
		}
		rows[i] = row
	}
	return rows, nil
}

// countValues returns "1 value" or "n values".
func countValues(n int) string {
	if n == 1 {
		return "1 value"
	}
	return strconv.Itoa(n) + " values"
}

// FormatParameters returns parameters as Qlik's capabilities describe
// them, such as "a:NUMERIC, b:STRING", or "none".
func FormatParameters(params []*ssepb.Parameter) string {
	if len(params) == 0 {
		return "none"
	}
	parts := make([]string, len(params))
	for i, param := range params {
		parts[i] = param.GetName() + ":" + param.GetDataType().String()
	}
	return strings.Join(parts, ", ")
}

// dual converts the cell into a value of dataType.
func (c cell) dual(dataType ssepb.DataType) (*ssepb.Dual, error) {
	if c.json != nil {
		return jsonDual(c.json, dataType)
	}
	return textDual(c.text, dataType)
}

func textDual(text string, dataType ssepb.DataType) (*ssepb.Dual, error) {
	switch dataType {
	case ssepb.DataType_NUMERIC:
		if strings.TrimSpace(text) == "" {
			return &ssepb.Dual{NumData: math.NaN()}, nil
		}
		number, err := parseNumber(text)
		if err != nil {
			return nil, err
		}
		return &ssepb.Dual{NumData: number}, nil
	case ssepb.DataType_STRING:
		return &ssepb.Dual{StrData: text}, nil
	case ssepb.DataType_DUAL:
		number, err := parseNumber(text)
		if err != nil {
			number = math.NaN()
		}
		return &ssepb.Dual{NumData: number, StrData: text}, nil
	}
	return nil, fmt.Errorf("%w: parameter type %d is none of STRING, NUMERIC and DUAL", ErrInvalidValue, dataType)
}

func jsonDual(raw json.RawMessage, dataType ssepb.DataType) (*ssepb.Dual, error) {
	text := strings.TrimSpace(string(raw))
	var kind byte
	if text != "" {
		kind = text[0]
	}
	switch {
	case text == "null":
		if dataType == ssepb.DataType_STRING {
			return &ssepb.Dual{}, nil
		}
		return &ssepb.Dual{NumData: math.NaN()}, nil
	case kind == '"':
		var str string
		if err := json.Unmarshal(raw, &str); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalidValue, text, err)
		}
		return textDual(str, dataType)
	case kind == '-' || (kind >= '0' && kind <= '9'):
		number, err := parseNumber(text)
		if err != nil {
			return nil, err
		}
		switch dataType {
		case ssepb.DataType_NUMERIC:
			return &ssepb.Dual{NumData: number}, nil
		case ssepb.DataType_STRING:
			return &ssepb.Dual{StrData: text}, nil
		case ssepb.DataType_DUAL:
			return &ssepb.Dual{NumData: number, StrData: text}, nil
		}
	case kind == '[' && dataType == ssepb.DataType_DUAL:
		var pair []json.RawMessage
		if err := json.Unmarshal(raw, &pair); err != nil || len(pair) != 2 {
			return nil, fmt.Errorf("%w: %s is not a [number, \"text\"] pair", ErrInvalidValue, text)
		}
		var number float64
		var str string
		if json.Unmarshal(pair[0], &number) != nil || json.Unmarshal(pair[1], &str) != nil {
			return nil, fmt.Errorf("%w: %s is not a [number, \"text\"] pair", ErrInvalidValue, text)
		}
		return &ssepb.Dual{NumData: number, StrData: str}, nil
	}

	// Objects, booleans, and arrays for other types.
	switch dataType {
	case ssepb.DataType_NUMERIC:
		return nil, fmt.Errorf("%w: %s is not a number; write a JSON number, a string holding one, or null", ErrInvalidValue, text)
	case ssepb.DataType_STRING:
		return nil, fmt.Errorf("%w: %s is not a string; write a JSON string, a number, or null", ErrInvalidValue, text)
	case ssepb.DataType_DUAL:
		return nil, fmt.Errorf("%w: %s is not a dual; write a JSON number, a string, a [number, \"text\"] pair, or null", ErrInvalidValue, text)
	}
	return nil, fmt.Errorf("%w: parameter type %d is none of STRING, NUMERIC and DUAL", ErrInvalidValue, dataType)
}

// parseNumber reads a number, surrounding spaces allowed. It rejects
// numbers beyond the range of float64, which strconv would round to an
// infinity, since that is more likely a typing mistake than intended.
func parseNumber(text string) (float64, error) {
	number, err := strconv.ParseFloat(strings.TrimSpace(text), 64)
	if errors.Is(err, strconv.ErrRange) && math.IsInf(number, 0) {
		return 0, fmt.Errorf("%w: %q is out of range: a number's magnitude must be at most %g", ErrInvalidValue, text, math.MaxFloat64)
	}
	if err != nil {
		return 0, fmt.Errorf("%w: %q is not a number", ErrInvalidValue, text)
	}
	return number, nil
}

// Bundle splits rows into bundles of at most size rows, as Qlik streams
// them. It returns no bundles for no rows, and a single bundle for a size
// below 1.
func Bundle(rows []*ssepb.Row, size int) []*ssepb.BundledRows {
	if size < 1 {
		size = len(rows)
	}
	var bundles []*ssepb.BundledRows
	for start := 0; start < len(rows); start += size {
		end := min(start+size, len(rows))
		bundles = append(bundles, &ssepb.BundledRows{Rows: rows[start:end]})
	}
	return bundles
}
