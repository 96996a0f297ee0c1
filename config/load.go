package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"iter"
	"maps"
	"math"
	"math/big"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// EnvPrefix starts every environment variable that overrides a key of the
// file: SSEGW_LOG_LEVEL for log.level, SSEGW_ENGINES_SSEPYTHON_REQUEST_TIMEOUT
// for engines.SSEPython.request_timeout, SSEGW_LISTENERS_0_ADDRESS for the
// first listener's address. A list of strings takes comma-separated values.
const EnvPrefix = "SSEGW_"

// Load reads the YAML file at path, applies SSEGW_ environment variables
// from environ (as returned by os.Environ), fills in defaults and validates
// the result. Its error lists every problem found, one per line, each naming
// the key (and the file, for certificates) at fault.
//
// The file must be a regular file of at most MaxFileSize bytes.
func Load(path string, environ []string) (*Config, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	cfg, err := parse(data, environ, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("config %s:\n%w", path, err)
	}
	return cfg, nil
}

// Parse is Load for a file's content already in memory. Relative paths in
// it are relative to the current folder.
func Parse(data []byte, environ []string) (*Config, error) {
	return parse(data, environ, "")
}

// parse is Parse with relative paths taken from baseDir, the folder of
// the configuration file, so that a service started from any folder finds
// its certificates.
func parse(data []byte, environ []string, baseDir string) (*Config, error) {
	// Read the file. viper lowercases every key (as of v1.21), which would
	// turn the engine SSEPython into ssepython in logs and span names, and
	// the function SumOfRows into sumofrows in messages, so the spelling
	// of engine and function names is read from the YAML separately.
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
		return nil, yamlError(data, err)
	}
	spelling, spellingErr := readKeySpelling(data)
	settings := v.AllSettings()
	escaped := escapedValues(data)

	// Apply the environment and decode. Unknown keys are errors, so that a
	// misspelt key is reported instead of silently keeping its default:
	// unknownKeys finds them all, where mapstructure would report the
	// first of each section and leave the section out.
	problems := []error{spellingErr, singleDocument(data)}
	envProblems, fromEnv := applyEnv(settings, environ, spelling)
	problems = append(problems, envProblems...)
	problems = append(problems, unknownKeys(settings, reflect.TypeFor[Config](), "", spelling)...)
	var raw map[string]any
	if yaml.Unmarshal(data, &raw) == nil {
		problems = append(problems, droppedUnknownKeys(raw, settings, reflect.TypeFor[Config](), "")...)
	}
	cfg := &Config{}
	var undecoded []string  // key paths whose validation problems would repeat a decoding problem
	var failedKeys []string // keys whose values failed to decode, in Validate's notation
	if err := decode(settings, cfg); err != nil {
		decoded, failed, entries := decodeProblems(err, spelling)
		problems = append(problems, decoded...)
		// mapstructure leaves out a map entry or list item with a field
		// that failed to decode, so validation would find it empty and
		// its other problems would go unreported. So decode again without
		// the failed values, and let validation skip only their keys,
		// which now hold defaults. Should that fail too, the entries are
		// skipped whole.
		for _, name := range failed {
			deleteSetting(settings, name)
			failedKeys = append(failedKeys, keyPath(name, spelling))
		}
		undecoded = entries
		if again := (&Config{}); decode(settings, again) == nil {
			cfg, undecoded = again, nil
			for _, key := range failedKeys {
				undecoded = append(undecoded, key+":", key+".", key+"[")
			}
		}
	}

	// Give engines back their spelling. viper drops an engine written
	// without a body ("R:"), which must still count as configured.
	if cfg.Engines == nil && len(spelling["engines"]) > 0 {
		cfg.Engines = map[string]*Engine{}
	}
	for key := range spelling["engines"] {
		if _, ok := cfg.Engines[key]; !ok {
			cfg.Engines[key] = nil
		}
	}
	for key, engine := range cfg.Engines {
		if engine == nil {
			engine = &Engine{}
			cfg.Engines[key] = engine
		}
		engine.Name = spelling.spell("engines", key)
	}

	// Validate what decoded, so that the file's problems come out at once.
	problems = append(problems, explicitZeros(settings, cfg, spelling)...)
	cfg.ApplyDefaults()
	cfg.resolvePaths(baseDir)
	for _, problem := range flatten([]error{cfg.validate(spelling, failedKeys)}) {
		if !slices.ContainsFunc(undecoded, func(prefix string) bool { return strings.HasPrefix(problem.Error(), prefix) }) {
			problems = append(problems, problem)
		}
	}
	var lines []error
	for _, problem := range problems {
		if joined, ok := problem.(interface{ Unwrap() []error }); ok {
			for _, inner := range joined.Unwrap() {
				lines = append(lines, oneLine(withEscapeHint(namingEnv(inner, fromEnv), escaped)))
			}
			continue
		}
		lines = append(lines, oneLine(withEscapeHint(namingEnv(problem, fromEnv), escaped)))
	}
	if err := errors.Join(lines...); err != nil {
		return nil, err
	}
	return cfg, nil
}

// oneLine keeps a problem on its line: a key or name in the file may hold
// a line break, which would split the problem and look like two.
func oneLine(err error) error {
	if err == nil || !strings.ContainsAny(err.Error(), "\r\n") {
		return err
	}
	return errors.New(strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(err.Error()))
}

// resolvePaths makes the file's relative paths relative to baseDir.
func (c *Config) resolvePaths(baseDir string) {
	if baseDir == "" || baseDir == "." {
		return
	}
	resolve := func(path *string) {
		if *path != "" && !filepath.IsAbs(*path) {
			*path = filepath.Join(baseDir, *path)
		}
	}
	for i := range c.Listeners {
		if tls := c.Listeners[i].TLS; tls != nil {
			for _, path := range []*string{&tls.Dir, &tls.CertFile, &tls.KeyFile, &tls.ClientCAFile} {
				resolve(path)
			}
		}
	}
	for _, engine := range c.Engines {
		for i := range engine.Backends {
			if tls := engine.Backends[i].TLS; tls != nil {
				for _, path := range []*string{&tls.Dir, &tls.CAFile, &tls.CertFile, &tls.KeyFile} {
					resolve(path)
				}
			}
		}
	}
	resolve(&c.StateDir)
}

// ApplyDefaults fills in keys left out of the file, and names each engine
// after its key when its Name is empty, as for a Config built in code. It
// also writes the hex digits of sha256: entries of allow_clients in lower
// case, the form in which the gateway compares them with a client's key.
func (c *Config) ApplyDefaults() {
	for key, engine := range c.Engines {
		if engine == nil {
			// An engine with no keys, as a configuration built in code may
			// hold, is an engine with its defaults, as in a file.
			engine = &Engine{}
			c.Engines[key] = engine
		}
		orDefault(&engine.Name, key)
		orDefault(&engine.ProbeInterval, DefaultProbeInterval)
		orDefault(&engine.ProbeTimeout, DefaultProbeTimeout)
		orDefault(&engine.DNSInterval, DefaultDNSInterval)
		orDefault(&engine.Balancer, BalancerLeastRequest)
		orDefault(&engine.MaxWaiting, DefaultMaxWaiting)
		orDefault(&engine.ReplayBuffer, DefaultReplayBuffer)
		orDefault(&engine.MaxAttempts, DefaultMaxAttempts)
		orDefault(&engine.Scripts, ScriptsAllow)
		engine.AllowClients = lowerCasePins(engine.AllowClients)
		if len(engine.Merge) > 0 && engine.MergePrefix == "" {
			engine.MergePrefix = DefaultMergePrefix
		}
	}
	orDefault(&c.Limits.MaxMessageSize, DefaultMaxMessageSize)
	orDefault(&c.Limits.MaxHeaderListSize, DefaultMaxHeaderListSize)
	orDefault(&c.Keepalive.MinPingInterval, DefaultMinPingInterval)
	orDefault(&c.Keepalive.BackendPingInterval, DefaultBackendPingInterval)
	orDefault(&c.Log.Level, DefaultLogLevel)
	orDefault(&c.Log.Format, DefaultLogFormat)
	c.applyObservabilityDefaults()
	orDefault(&c.DrainTimeout, DefaultDrainTimeout)
	orDefault(&c.CertificateExpiryWarning, DefaultCertificateExpiryWarning)
	orDefault(&c.Limits.MaxConcurrentStreams, DefaultMaxConcurrentStreams)
	orDefault(&c.Limits.MaxConnections, DefaultMaxConnections)
	orDefault(&c.Limits.StreamWindow, DefaultStreamWindow)
}

// lowerCasePins returns clients with the hex digits of each sha256: pin
// in lower case, in a new slice when any changed. An entry that is not a
// valid pin stays as written, so that its validation error quotes it.
func lowerCasePins(clients []string) []string {
	var lowered []string
	for i, client := range clients {
		hash, ok := strings.CutPrefix(client, pinPrefix)
		if !ok || !isSHA256Hex(hash) || hash == strings.ToLower(hash) {
			continue
		}
		if lowered == nil {
			lowered = slices.Clone(clients)
		}
		lowered[i] = pinPrefix + strings.ToLower(hash)
	}
	if lowered == nil {
		return clients
	}
	return lowered
}

// maxSearchedYAML is the size of the largest file in which firstLineWith
// looks for a mistake; the example config.yaml has 5 kB.
const maxSearchedYAML = 16 << 10

// yamlLine finds the line number in the YAML parser's error messages.
var yamlLine = regexp.MustCompile(`yaml: line (\d+): `)

// yamlError rewords the YAML parser's error about data. The parser often
// names the line where the enclosing block or list starts, or the one
// before it, rather than the line with the mistake. The first line at which
// the file, read up to that line, fails with the same problem is a better
// guess: the lines before it parse. The parser also spreads some errors
// over several lines; each problem gets one.
func yamlError(data []byte, err error) error {
	text := strings.TrimPrefix(foldedMessage(err), "While parsing config: ")
	problem := strings.TrimPrefix(yamlLine.ReplaceAllString(text, ""), "yaml: ")
	from := 1
	if match := yamlLine.FindStringSubmatch(text); match != nil {
		from, _ = strconv.Atoi(match[1])
	}
	hint := ""
	if slices.ContainsFunc(badEscapeProblems, func(bad string) bool { return strings.HasPrefix(problem, bad) }) {
		hint = "; " + backslashHint + ", so write Windows paths in single quotes, such as 'C:\\certs\\gateway', or with forward slashes"
	}
	if line := firstLineWith(data, problem, from); line > 0 {
		return fmt.Errorf("invalid YAML at line %d (the lines before it parse): %s%s", line, problem, hint)
	}
	text = yamlLine.ReplaceAllString(text, "at or after line $1: ")
	return fmt.Errorf("invalid YAML %s%s", strings.TrimPrefix(text, "yaml: "), hint)
}

// badEscapeProblems are the YAML parser's messages, as of go-yaml v3.0.5,
// for a backslash in double quotes that starts no escape, as \c does in
// "C:\certs", or an escape that expects hex digits, as \U does in
// "C:\Users".
var badEscapeProblems = []string{"found unknown escape character", "did not find expected hexdecimal number"}

// backslashHint starts the advice for a Windows path written in double
// quotes.
const backslashHint = "in double quotes YAML reads a backslash as the start of an escape"

// yamlEscapes are the control and line break characters that YAML's
// one-letter escapes write, with the escape and a name for each.
var yamlEscapes = map[rune]struct{ escape, name string }{
	'\x00':   {`\0`, "a NUL character"},
	'\a':     {`\a`, "a bell character"},
	'\b':     {`\b`, "a backspace"},
	'\t':     {`\t`, "a tab"},
	'\n':     {`\n`, "a line feed"},
	'\v':     {`\v`, "a vertical tab"},
	'\f':     {`\f`, "a form feed"},
	'\r':     {`\r`, "a carriage return"},
	'\x1b':   {`\e`, "an escape character"},
	'\u0085': {`\N`, "a next line character"},
	'\u2028': {`\L`, "a line separator"},
	'\u2029': {`\P`, "a paragraph separator"},
}

// isEscapedCharacter reports whether r is a control character or a line
// or paragraph separator. A path in a configuration file most likely got
// such a character from an escape in double quotes.
func isEscapedCharacter(r rune) bool {
	return unicode.IsControl(r) || r == '\u2028' || r == '\u2029'
}

// escapedValues returns the double-quoted values in a YAML file that hold
// a character that isEscapedCharacter reports. Written as "C:\new\test",
// a Windows path parses without error, but as C:, a line feed, "ew", a
// tab and "est", and then a folder is not found under a name that looks
// almost right.
func escapedValues(data []byte) []string {
	var document yaml.Node
	if yaml.Unmarshal(data, &document) != nil {
		return nil
	}
	var values []string
	var walk func(node *yaml.Node)
	walk = func(node *yaml.Node) {
		for i, child := range node.Content {
			// Only values count, and a mapping's keys are its even children.
			if node.Kind == yaml.MappingNode && i%2 == 0 {
				continue
			}
			if child.Kind == yaml.ScalarNode && child.Style&yaml.DoubleQuotedStyle != 0 && strings.ContainsFunc(child.Value, isEscapedCharacter) {
				values = append(values, child.Value)
			}
			walk(child)
		}
	}
	walk(&document)
	return values
}

// withEscapeHint appends advice on Windows paths in YAML to problem when
// problem names one of the values that escapedValues returns.
func withEscapeHint(problem error, escaped []string) error {
	if problem == nil {
		return nil
	}
	for _, value := range escaped {
		if strings.Contains(problem.Error(), value) {
			return fmt.Errorf("%w; %s", problem, escapeHint(value))
		}
	}
	return problem
}

// escapeHint returns the advice for value, a double-quoted value that
// escapes changed. It names the first escape, and when every changed
// character has a one-letter escape, it also gives the value as it was
// most likely meant, in single quotes.
func escapeHint(value string) string {
	var meant strings.Builder
	restored := true
	for _, r := range value {
		escape, ok := yamlEscapes[r]
		switch {
		case ok:
			meant.WriteString(escape.escape)
		case isEscapedCharacter(r):
			restored = false
		case r == '\'':
			meant.WriteString("''")
		default:
			meant.WriteRune(r)
		}
	}
	first, _ := utf8.DecodeRuneInString(value[strings.IndexFunc(value, isEscapedCharacter):])
	change := fmt.Sprintf("an escape made %U here", first)
	if escape, ok := yamlEscapes[first]; ok {
		change = fmt.Sprintf("%s made %s here", escape.escape, escape.name)
	}
	if !restored {
		return fmt.Sprintf("%s, and %s, so write Windows paths in single quotes or with forward slashes", backslashHint, change)
	}
	return fmt.Sprintf("%s, and %s, so write Windows paths in single quotes, such as '%s', or with forward slashes", backslashHint, change, meant.String())
}

// firstLineWith returns the number of the first line, from line from on,
// up to which data fails to parse with problem, or 0 when no such line is
// found. Parsing every prefix costs time in the square of the file's size,
// little for a config file, so a file over maxSearchedYAML is not searched.
func firstLineWith(data []byte, problem string, from int) int {
	if len(data) > maxSearchedYAML {
		return 0
	}
	var value any
	end, line := 0, 0
	for end < len(data) {
		next := bytes.IndexByte(data[end:], '\n')
		if next < 0 {
			end = len(data)
		} else {
			end += next + 1
		}
		line++
		if line < from {
			continue
		}
		err := yaml.Unmarshal(data[:end], &value)
		if err != nil && strings.HasSuffix(foldedMessage(err), ": "+problem) {
			return line
		}
	}
	return 0
}

// foldedMessage returns err's message with its white space, line breaks
// included, folded to single spaces: the YAML parser spreads some
// messages over several lines.
func foldedMessage(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// orDefault sets a key that the file left out, which is its zero value.
// zeroMeansDefault lists the keys for which ApplyDefaults cannot tell 0
// from a key left out, with their defaults. Written as 0, they would
// silently take the default, where an admin may mean "none" or "no
// limit", as 0 means for other keys: explicitZeros refuses them. For
// drain_timeout, certificate_expiry_warning and max_concurrent_streams
// the README documents that 0 keeps the default.
var zeroMeansDefault = []struct {
	key     string
	value   func(*Config, *Engine) any // the decoded value; engine keys get their engine
	def     any
	engines bool
}{
	{key: "probe_interval", value: func(_ *Config, e *Engine) any { return e.ProbeInterval }, def: DefaultProbeInterval, engines: true},
	{key: "probe_timeout", value: func(_ *Config, e *Engine) any { return e.ProbeTimeout }, def: DefaultProbeTimeout, engines: true},
	{key: "dns_interval", value: func(_ *Config, e *Engine) any { return e.DNSInterval }, def: DefaultDNSInterval, engines: true},
	{key: "max_waiting", value: func(_ *Config, e *Engine) any { return e.MaxWaiting }, def: DefaultMaxWaiting, engines: true},
	{key: "replay_buffer", value: func(_ *Config, e *Engine) any { return e.ReplayBuffer }, def: ByteSize(DefaultReplayBuffer), engines: true},
	{key: "max_attempts", value: func(_ *Config, e *Engine) any { return e.MaxAttempts }, def: DefaultMaxAttempts, engines: true},
	{key: "limits.max_message_size", value: func(c *Config, _ *Engine) any { return c.Limits.MaxMessageSize }, def: DefaultMaxMessageSize},
	{key: "limits.max_header_list_size", value: func(c *Config, _ *Engine) any { return c.Limits.MaxHeaderListSize }, def: DefaultMaxHeaderListSize},
	{key: "limits.max_connections", value: func(c *Config, _ *Engine) any { return c.Limits.MaxConnections }, def: DefaultMaxConnections},
	{key: "limits.stream_window", value: func(c *Config, _ *Engine) any { return c.Limits.StreamWindow }, def: ByteSize(DefaultStreamWindow)},
	{key: "keepalive.min_ping_interval", value: func(c *Config, _ *Engine) any { return c.Keepalive.MinPingInterval }, def: DefaultMinPingInterval},
	{key: "keepalive.backend_ping_interval", value: func(c *Config, _ *Engine) any { return c.Keepalive.BackendPingInterval }, def: DefaultBackendPingInterval},
}

// explicitZeros returns a problem for each key of zeroMeansDefault that
// settings, the file with the environment applied, sets to 0, and for a
// function's max_attempts of 0, which would take the engine's.
func explicitZeros(settings map[string]any, cfg *Config, spelling keySpelling) []error {
	var problems []error
	check := func(path string, set map[string]any, key string, value, def any) {
		if _, ok := set[key]; ok && reflect.ValueOf(value).IsZero() {
			problems = append(problems, fmt.Errorf("%s: 0 is not allowed; leave the key out for the default, %v", path, def))
		}
	}
	engines, _ := settings["engines"].(map[string]any)
	for _, entry := range zeroMeansDefault {
		if entry.engines {
			for key, engine := range cfg.Engines {
				set, _ := engines[key].(map[string]any)
				if engine != nil {
					check("engines."+engine.Name+"."+entry.key, set, entry.key, entry.value(cfg, engine), entry.def)
				}
			}
			continue
		}
		section, key, _ := strings.Cut(entry.key, ".")
		set, _ := settings[section].(map[string]any)
		check(entry.key, set, key, entry.value(cfg, nil), entry.def)
	}
	for key, engine := range cfg.Engines {
		if engine == nil {
			continue
		}
		engineSettings, _ := engines[key].(map[string]any)
		functions, _ := engineSettings["functions"].(map[string]any)
		mapPath := "engines." + engine.Name + ".functions"
		for name, policy := range engine.Functions {
			set, _ := functions[name].(map[string]any)
			if policy != nil {
				check(mapPath+"."+spelling.spell(mapPath, name)+".max_attempts", set, "max_attempts", policy.MaxAttempts, "the engine's max_attempts")
			}
		}
	}
	return problems
}

func orDefault[T comparable](key *T, value T) {
	var zero T
	if *key == zero {
		*key = value
	}
}

// unknownKeys returns one problem per key in node that typ has no field
// for, at any depth, with its path in Validate's notation.
func unknownKeys(node any, typ reflect.Type, path string, spelling keySpelling) []error {
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	var problems []error
	switch typ.Kind() {
	case reflect.Struct:
		settings, ok := node.(map[string]any)
		if !ok {
			return nil // a type mismatch, which decoding reports
		}
		keys := slices.Sorted(maps.Keys(settings))
		for _, key := range keys {
			field, ok := fieldByTag(typ, key)
			if !ok {
				problems = append(problems, unknownKeyProblem(typ, path, key))
				continue
			}
			problems = append(problems, unknownKeys(settings[key], field.Type, joinPath(path, key), spelling)...)
		}
	case reflect.Map:
		entries, ok := node.(map[string]any)
		if !ok {
			return nil
		}
		for _, key := range slices.Sorted(maps.Keys(entries)) {
			problems = append(problems, unknownKeys(entries[key], typ.Elem(), joinPath(path, spelling.spell(path, key)), spelling)...)
		}
	case reflect.Slice:
		items, ok := node.([]any)
		if !ok {
			return nil
		}
		for i, item := range items {
			problems = append(problems, unknownKeys(item, typ.Elem(), fmt.Sprintf("%s[%d]", path, i), spelling)...)
		}
	}
	return problems
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// singleDocument returns a problem when data holds more than one YAML
// document with content: viper reads only the first, and the keys of the
// others would be ignored without a word.
func singleDocument(data []byte) error {
	decoder := yaml.NewDecoder(bytes.NewReader(data))
	documents := 0
	for {
		var document yaml.Node
		if err := decoder.Decode(&document); err != nil {
			if !errors.Is(err, io.EOF) && documents > 0 {
				// Text after the first document that does not parse, such
				// as a broken second document: viper never reads it.
				return fmt.Errorf("invalid YAML after the first document, which alone would be read: %w", err)
			}
			break // the end, or an error in the first, which viper reported
		}
		if len(document.Content) == 1 && document.Content[0].Tag == "!!null" {
			continue // nothing but a separator
		}
		documents++
	}
	if documents > 1 {
		return fmt.Errorf("invalid YAML: the file has %d documents, separated by ---, and only the first would be read; put every key in one", documents)
	}
	return nil
}

// keySpelling stores how the file spells the keys that viper lowercases
// and messages name: engine names, and each engine's function names. It
// maps the key path of each such map, in Validate's notation ("engines",
// "engines.SSEPython.functions"), to the spelling of its keys by their
// lowercased form. A nil keySpelling, as for a Config built in code,
// leaves every key as it is.
type keySpelling map[string]map[string]string

// spell returns key, a key of the map at mapPath as viper stores it, as
// the file spells it, or key itself when the file's spelling is unknown.
func (s keySpelling) spell(mapPath, key string) string {
	if spelt, ok := s[mapPath][key]; ok {
		return spelt
	}
	return key
}

// readKeySpelling reads the spelling of engine and function names from
// the YAML in data. Its error lists engine names, and function names of
// one engine, that differ only in case.
func readKeySpelling(data []byte) (keySpelling, error) {
	var doc struct {
		Engines yaml.Node `yaml:"engines"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("invalid YAML: %w", err)
	}
	engines := map[string]string{}
	spelling := keySpelling{"engines": engines}
	if doc.Engines.Kind != yaml.MappingNode {
		return spelling, nil
	}
	var duplicates []error
	for i := 0; i+1 < len(doc.Engines.Content); i += 2 {
		name := doc.Engines.Content[i].Value
		key := strings.ToLower(name)
		if earlier, ok := engines[key]; ok {
			duplicates = append(duplicates, fmt.Errorf("engines: %q and %q differ only in case; Qlik engine names must be unique ignoring case", earlier, name))
			continue
		}
		engines[key] = name
		duplicates = append(duplicates, readFunctionSpelling(spelling, "engines."+name+".functions", doc.Engines.Content[i+1])...)
	}
	return spelling, errors.Join(duplicates...)
}

// readFunctionSpelling adds the spelling of the function names in the
// YAML node of an engine to spelling, under mapPath, and returns an error
// for each name that differs from an earlier one only in case. It follows
// aliases, so that functions: *shared keeps its names' spelling, but not
// merge keys (<<), whose function names stay lowercased.
func readFunctionSpelling(spelling keySpelling, mapPath string, engine *yaml.Node) (duplicates []error) {
	engine = dealias(engine)
	if engine.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(engine.Content); i += 2 {
		// viper also lowercases the key "functions" itself, so
		// Functions: counts too.
		functions := dealias(engine.Content[i+1])
		if strings.ToLower(engine.Content[i].Value) != "functions" || functions.Kind != yaml.MappingNode {
			continue
		}
		names := spelling[mapPath]
		if names == nil {
			names = map[string]string{}
			spelling[mapPath] = names
		}
		for j := 0; j+1 < len(functions.Content); j += 2 {
			name := functions.Content[j].Value
			key := strings.ToLower(name)
			if earlier, ok := names[key]; ok && earlier != name {
				// viper keeps only one of the two policies, whichever
				// its map iteration visits last (v1.21).
				// Which spelling it kept is unknown, so other messages
				// show the name as viper stores it.
				duplicates = append(duplicates, fmt.Errorf("%s: %q and %q differ only in case; the gateway matches function names ignoring case, so give the function one policy", mapPath, earlier, name))
				names[key] = key
				continue
			}
			names[key] = name
		}
	}
	return duplicates
}

// dealias returns the node that an alias (*name) refers to, or node
// itself when it is not an alias.
func dealias(node *yaml.Node) *yaml.Node {
	for node.Kind == yaml.AliasNode && node.Alias != nil {
		node = node.Alias
	}
	return node
}

// applyEnv overrides settings with the SSEGW_ variables in environ. It
// walks the Config type to split a variable's name into keys, since keys
// themselves contain underscores. Map entries and list items must already
// exist in the file; a variable that names no key is a problem.
func applyEnv(settings map[string]any, environ []string, spelling keySpelling) (problems []error, fromEnv map[string]string) {
	fromEnv = map[string]string{}
	for _, entry := range environ {
		name, value, ok := strings.Cut(entry, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) {
			continue
		}
		words := strings.Split(strings.ToLower(strings.TrimPrefix(name, EnvPrefix)), "_")
		path, err := setByWords(settings, reflect.TypeFor[Config](), words, value, "")
		if err != nil {
			problems = append(problems, fmt.Errorf("environment variable %s: %w", name, err))
			continue
		}
		fromEnv[keyPath(path, spelling)] = name
	}
	return problems, fromEnv
}

// namingEnv adds to problem the environment variables that set its key or
// keys under it, so that a value the file does not hold is not looked for
// there. A problem of a whole listener, such as its address without TLS,
// lists the variables that set keys of that listener, whichever key the
// problem is about.
func namingEnv(problem error, fromEnv map[string]string) error {
	if problem == nil {
		return nil
	}
	text := problem.Error()
	var under []string
	for key, name := range fromEnv {
		if strings.HasPrefix(text, key+":") {
			return fmt.Errorf("%w (set by %s)", problem, name)
		}
		if problemKey, _, ok := strings.Cut(text, ":"); ok && (strings.HasPrefix(key, problemKey+".") || strings.HasPrefix(key, problemKey+"[")) {
			under = append(under, name+" sets "+key)
		}
	}
	if len(under) == 0 {
		return problem
	}
	slices.Sort(under)
	return fmt.Errorf("%w (in the environment, %s)", problem, strings.Join(under, ", "))
}

// setByWords stores value at the key path spelt by words, where each key
// of the path may span several words, and returns that path as a
// mapstructure field name, which keyPath turns into Validate's notation.
// path is the name of node.
func setByWords(node any, typ reflect.Type, words []string, value, path string) (string, error) {
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	switch typ.Kind() {
	case reflect.Struct:
		settings, ok := node.(map[string]any)
		if !ok {
			return "", errors.New("no such configuration key")
		}
		// Longest key first, so that request_timeout wins over request.
		for n, key := range keyPrefixes(words) {
			field, ok := fieldByTag(typ, key)
			if !ok {
				continue
			}
			if n == len(words) {
				if !isScalar(field.Type) {
					return "", errors.New("names a whole section; name one of its keys")
				}
				settings[key] = envValue(field.Type, value)
				return joinName(path, key), nil
			}
			child, ok := settings[key]
			if !ok || child == nil {
				child = map[string]any{}
				settings[key] = child
			}
			return setByWords(child, field.Type, words[n:], value, joinName(path, key))
		}
		// Longest first again, for the key the variable most likely
		// misspells. A suggestion must itself be accepted: a section only
		// when the rest of the variable names one of its keys, tried on a
		// copy of the file's section, and a whole name only when it takes
		// a value.
		for n, prefix := range keyPrefixes(words) {
			near := nearestKey(typ, prefix)
			if near == "" {
				continue
			}
			field, _ := fieldByTag(typ, near)
			if n == len(words) && !isScalar(field.Type) {
				continue
			}
			if n < len(words) {
				section := copySettings(settings[near])
				if section == nil {
					section = map[string]any{}
				}
				if _, err := setByWords(section, field.Type, words[n:], value, ""); err != nil {
					continue
				}
			}
			return "", fmt.Errorf("no such configuration key; did you mean %s?", envName(joinName(path, near), words[n:]))
		}
	case reflect.Map:
		entries, ok := node.(map[string]any)
		if !ok {
			return "", errors.New("no such configuration key")
		}
		for n := len(words); n > 0; n-- {
			key := strings.Join(words[:n], "_")
			child, ok := entries[key]
			if !ok {
				continue
			}
			if n == len(words) {
				return "", errors.New("names a whole entry; name one of its keys")
			}
			if child == nil {
				child = map[string]any{}
				entries[key] = child
			}
			return setByWords(child, typ.Elem(), words[n:], value, path+"["+key+"]")
		}
		return "", fmt.Errorf("no entry %q in the file; environment variables override entries, they cannot add one", words[0])
	case reflect.Slice:
		items, ok := node.([]any)
		index, err := strconv.Atoi(words[0])
		if !ok || err != nil || index < 0 || index >= len(items) {
			return "", fmt.Errorf("no list item %q in the file; environment variables override items, they cannot add one", words[0])
		}
		if len(words) == 1 {
			return "", errors.New("names a whole list item; name one of its keys")
		}
		return setByWords(items[index], typ.Elem(), words[1:], value, path+"["+words[0]+"]")
	}
	return "", errors.New("no such configuration key")
}

// copySettings returns a deep copy of a value of viper's settings, so
// that a trial of setByWords leaves the settings as they were.
func copySettings(value any) any {
	switch value := value.(type) {
	case map[string]any:
		copied := make(map[string]any, len(value))
		for key, item := range value {
			copied[key] = copySettings(item)
		}
		return copied
	case []any:
		copied := make([]any, len(value))
		for i, item := range value {
			copied[i] = copySettings(item)
		}
		return copied
	}
	return value
}

// keyPrefixes yields the first n words of words joined by underscores,
// with n, longest first, leaving out those longer than any key: a
// variable name of thousands of words would otherwise cost its length
// squared.
func keyPrefixes(words []string) iter.Seq2[int, string] {
	return func(yield func(int, string) bool) {
		length := len(words) - 1 // of the words joined by underscores
		for _, word := range words {
			length += len(word)
		}
		for n := len(words); n > 0; n-- {
			if n < len(words) {
				length -= len(words[n]) + 1
			}
			if length <= maxKeyLength && !yield(n, strings.Join(words[:n], "_")) {
				return
			}
		}
	}
}

// envName returns the environment variable for the key at path, a
// mapstructure field name such as engines[R].request_timeout, followed by
// the words of rest.
func envName(path string, rest []string) string {
	name := strings.NewReplacer("].", "_", "[", "_", "]", "", ".", "_").Replace(path)
	for _, word := range rest {
		name += "_" + word
	}
	return EnvPrefix + strings.ToUpper(name)
}

// joinName appends a struct field's key to a mapstructure field name.
func joinName(name, key string) string {
	if name == "" {
		return key
	}
	return name + "." + key
}

// isScalar reports whether a field of type typ takes one value from the
// environment: a string, number, boolean, duration or size, or a list of
// strings.
func isScalar(typ reflect.Type) bool {
	if typ.Kind() == reflect.Pointer {
		typ = typ.Elem() // an optional value, such as *bool
	}
	switch typ.Kind() {
	case reflect.Struct, reflect.Map, reflect.Pointer, reflect.Interface:
		return false
	case reflect.Slice:
		return typ.Elem().Kind() == reflect.String
	}
	return true
}

func fieldByTag(typ reflect.Type, key string) (reflect.StructField, bool) {
	if key == "-" {
		return reflect.StructField{}, false // the tag of fields read from elsewhere
	}
	for i := range typ.NumField() {
		field := typ.Field(i)
		if field.Tag.Get("mapstructure") == key {
			return field, true
		}
	}
	return reflect.StructField{}, false
}

// unknownKeyProblem returns the problem of key, which typ at path has no
// field for, with the key most likely meant.
func unknownKeyProblem(typ reflect.Type, path, key string) error {
	where := path
	if where == "" {
		where = "top level"
	}
	hint := "check its spelling"
	if near := nearestKey(typ, key); near != "" {
		hint = "did you mean " + near + "?"
	} else if sections := keySections()[strings.ToLower(key)]; len(sections) > 0 {
		hint = "it belongs in " + strings.Join(sections, " or ")
	}
	return fmt.Errorf("%s: unknown key %s; %s", where, key, hint)
}

// droppedUnknownKeys returns one problem per unknown key of raw, the
// file's YAML as read without viper, that settings, viper's reading of
// it, does not have. viper drops a key whose value is null or {}, or holds
// only such keys, before unknownKeys looks. Such a key sets nothing, but
// a misspelt key is reported all the same.
func droppedUnknownKeys(raw, settings any, typ reflect.Type, path string) []error {
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	var problems []error
	switch typ.Kind() {
	case reflect.Struct:
		rawKeys := stringKeys(raw)
		read, _ := settings.(map[string]any)
		for _, key := range slices.Sorted(maps.Keys(rawKeys)) {
			if strings.Contains(key, ".") {
				// viper reads log.level as level under log, which
				// unknownKeys checks.
				continue
			}
			name := strings.ToLower(key) // as viper reads it
			value, inSettings := read[name]
			field, known := fieldByTag(typ, name)
			switch {
			case !known && !inSettings:
				problems = append(problems, unknownKeyProblem(typ, path, name))
			case known:
				problems = append(problems, droppedUnknownKeys(rawKeys[key], value, field.Type, joinPath(path, name))...)
			}
		}
	case reflect.Map:
		entries := stringKeys(raw)
		read, _ := settings.(map[string]any)
		for _, key := range slices.Sorted(maps.Keys(entries)) {
			problems = append(problems, droppedUnknownKeys(entries[key], read[strings.ToLower(key)], typ.Elem(), joinPath(path, key))...)
		}
	case reflect.Slice:
		items, _ := raw.([]any)
		read, _ := settings.([]any)
		for i, item := range items {
			var readItem any
			if i < len(read) {
				readItem = read[i]
			}
			problems = append(problems, droppedUnknownKeys(item, readItem, typ.Elem(), fmt.Sprintf("%s[%d]", path, i))...)
		}
	}
	return problems
}

// stringKeys returns a YAML mapping as go-yaml decodes it with its keys
// as text, as viper reads them: go-yaml gives a mapping with a key that
// is not a string, such as 1 or null, the type map[any]any.
func stringKeys(node any) map[string]any {
	switch node := node.(type) {
	case map[string]any:
		return node
	case map[any]any:
		keys := make(map[string]any, len(node))
		for key, value := range node {
			keys[fmt.Sprint(key)] = value
		}
		return keys
	}
	return nil
}

// maxKeyLength is longer than any key of the configuration, with room for
// a misspelling.
const maxKeyLength = 64

// keySections maps each key of the configuration to the sections that
// have it, such as client_ca_file to listeners[].tls, for a key written in
// the wrong section.
var keySections = sync.OnceValue(func() map[string][]string {
	sections := map[string][]string{}
	collectKeys(reflect.TypeFor[Config](), "", sections)
	return sections
})

// collectKeys adds the keys of typ, at path, and of every section below
// it to sections.
func collectKeys(typ reflect.Type, path string, sections map[string][]string) {
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	switch typ.Kind() {
	case reflect.Struct:
		where := path
		if where == "" {
			where = "the top level"
		}
		for i := range typ.NumField() {
			field := typ.Field(i)
			tag := field.Tag.Get("mapstructure")
			if tag == "" || tag == "-" {
				continue
			}
			sections[tag] = append(sections[tag], where)
			collectKeys(field.Type, joinPath(path, tag), sections)
		}
	case reflect.Map:
		collectKeys(typ.Elem(), path+".<name>", sections)
	case reflect.Slice:
		collectKeys(typ.Elem(), path+"[]", sections)
	}
}

// nearestKey returns the key of typ's fields that key most likely
// misspells: the closest by edit distance, at most two edits away and at
// most a third of its length, so that short unrelated keys are not
// offered. It returns "" when none is that close.
func nearestKey(typ reflect.Type, key string) string {
	best, bestDistance := "", min(3, len(key)/3+1)
	for i := range typ.NumField() {
		tag := typ.Field(i).Tag.Get("mapstructure")
		// The distance is at least the difference in length, and
		// skipping on it keeps a long key from costing its length
		// squared.
		if tag == "" || tag == "-" || max(len(key)-len(tag), len(tag)-len(key)) >= bestDistance {
			continue
		}
		if d := editDistance(strings.ToLower(key), tag); d < bestDistance {
			best, bestDistance = tag, d
		}
	}
	return best
}

// editDistance returns the number of single-byte insertions, deletions,
// substitutions and swaps of two neighbours that turn a into b (the
// optimal string alignment distance), so that "hsots" is one edit from
// "hosts".
func editDistance(a, b string) int {
	// rows[i][j] is the distance between a[:i] and b[:j].
	rows := make([][]int, len(a)+1)
	for i := range rows {
		rows[i] = make([]int, len(b)+1)
		rows[i][0] = i
	}
	for j := range rows[0] {
		rows[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			rows[i][j] = min(rows[i-1][j]+1, rows[i][j-1]+1, rows[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				rows[i][j] = min(rows[i][j], rows[i-2][j-2]+1)
			}
		}
	}
	return rows[len(a)][len(b)]
}

// envValue converts an environment string for a field of type typ: lists
// are comma-separated; every other type is converted by the decoder.
func envValue(typ reflect.Type, value string) any {
	if typ.Kind() == reflect.Slice && typ.Elem().Kind() == reflect.String {
		var items []any
		for item := range strings.SplitSeq(value, ",") {
			if item = strings.TrimSpace(item); item != "" {
				items = append(items, item)
			}
		}
		return items
	}
	return value
}

// durationHook decodes Go duration strings ("30s", "1m30s") and rejects
// bare numbers other than 0: Qlik's own settings count timeouts in seconds,
// and reading 30 as 30 nanoseconds would silently break calls.
func durationHook(from, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeFor[time.Duration]() {
		return data, nil
	}
	switch value := data.(type) {
	case string:
		if value == "0" {
			return time.Duration(0), nil
		}
		d, err := time.ParseDuration(value)
		if err != nil {
			if _, numberErr := strconv.ParseFloat(value, 64); numberErr == nil {
				// Quoted in the file, or from an environment variable.
				return nil, fmt.Errorf("duration %s has no unit: write %ss for seconds", value, value)
			}
			return nil, fmt.Errorf("invalid duration %q: write a number with a unit, such as 30s or 2m", value)
		}
		return d, nil
	case int, int64, uint64, float64:
		if reflect.ValueOf(value).IsZero() {
			return time.Duration(0), nil
		}
		return nil, fmt.Errorf("duration %v has no unit: write %vs for seconds", value, value)
	}
	return data, nil
}

func byteSizeHook(from, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeFor[ByteSize]() {
		return data, nil
	}
	switch value := data.(type) {
	case string:
		return ParseByteSize(value)
	case int, int64, uint64, float64:
		// A number of bytes, read as strictly as other whole numbers: 0.5
		// must not become 0, nor 1e19 wrap around.
		n, err := integerHook(nil, reflect.TypeFor[int64](), value)
		if err != nil {
			return nil, err
		}
		return ByteSize(n.(int64)), nil
	}
	return data, nil
}

// integerHook decodes the integer keys strictly. Weak decoding, which the
// environment's strings need, would cut off a fraction (max_in_flight: 0.5
// would mean no limit), wrap a value around the field's range (-1 for an
// unsigned field would mean 4294967295), and read "010" as octal.
func integerHook(_, to reflect.Type, data any) (any, error) {
	if to == reflect.TypeFor[time.Duration]() || to == reflect.TypeFor[ByteSize]() {
		return data, nil // their own hooks decoded them
	}

	// The range in big integers, because float64 cannot hold 2^63-1.
	var low, high big.Int
	signed := false
	switch to.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		signed = true
		high.Lsh(big.NewInt(1), uint(to.Bits()-1))
		low.Neg(&high)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		high.Lsh(big.NewInt(1), uint(to.Bits()))
	default:
		return data, nil
	}
	high.Sub(&high, big.NewInt(1))

	var value big.Int
	switch v := data.(type) {
	case string:
		if _, ok := value.SetString(strings.TrimSpace(v), 10); !ok {
			return nil, fmt.Errorf("invalid whole number %q", v)
		}
	case int:
		value.SetInt64(int64(v))
	case int64:
		value.SetInt64(v)
	case uint64:
		value.SetUint64(v)
	case float64:
		if math.IsInf(v, 0) || v != math.Trunc(v) {
			return nil, fmt.Errorf("%v is not a whole number", v)
		}
		big.NewFloat(v).Int(&value)
	default:
		return data, nil
	}

	if value.Cmp(&low) < 0 || value.Cmp(&high) > 0 {
		return nil, fmt.Errorf("%s is out of range: from %s to %s", &value, &low, &high)
	}
	// A value of the field's own type, which mapstructure sets as it is.
	out := reflect.New(to).Elem()
	if signed {
		out.SetInt(value.Int64())
	} else {
		out.SetUint(value.Uint64())
	}
	return out.Interface(), nil
}

// decodeProblems turns mapstructure's combined error into one error per
// problem, each starting with the key in the notation of Validate
// ("engines.SSEPython.request_timeout") rather than mapstructure's
// ("'engines[ssepython].request_timeout'"). It also returns the
// mapstructure names of the failed fields, and the key paths of the map
// entries and list items that hold them, each ending in "." or "[", ready
// for prefix matching.
func decodeProblems(err error, spelling keySpelling) (problems []error, failed, entries []string) {
	for _, single := range decodeLeaves(err) {
		var decodeErr *mapstructure.DecodeError
		if !errors.As(single, &decodeErr) {
			problems = append(problems, single)
			continue
		}
		failed = append(failed, decodeErr.Name())
		key := keyPath(decodeErr.Name(), spelling)
		if entry := enclosingEntry(key); entry != "" {
			entries = append(entries, entry+".", entry+":", entry+"[")
		}
		problems = append(problems, fmt.Errorf("%s: %w", key, decodeErr.Unwrap()))
	}
	// Map entries decode in random order; the file's problems should not.
	slices.SortFunc(problems, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return problems, failed, entries
}

// decode decodes settings into cfg, with the gateway's hooks for
// durations, sizes, integers, booleans and comma lists.
func decode(settings map[string]any, cfg *Config) error {
	decoder, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			durationHook,
			byteSizeHook,
			integerHook,
			boolHook,
			listHook,
		),
		WeaklyTypedInput: true,
		Result:           cfg,
	})
	if err != nil {
		return fmt.Errorf("building the config decoder: %w", err)
	}
	return decoder.Decode(settings)
}

// listHook reads a string as a comma-separated list, each item without
// the spaces around it, as lists from the environment are read: "a, b"
// must not name a client " b" that no certificate matches.
func listHook(_, to reflect.Type, data any) (any, error) {
	text, ok := data.(string)
	if !ok || to != reflect.TypeFor[[]string]() {
		return data, nil
	}
	if text == "" {
		return []string{}, nil
	}
	items := strings.Split(text, ",")
	for i := range items {
		items[i] = strings.TrimSpace(items[i])
	}
	return items, nil
}

// deleteSetting removes the value at a mapstructure field name, such as
// "engines[r].backends[0].address", from settings. A list item named
// whole is set to nil. A name that does not lead to a value is ignored.
func deleteSetting(settings map[string]any, name string) {
	parts := nameParts(name)
	var current any = settings
	for i, part := range parts {
		last := i == len(parts)-1
		switch node := current.(type) {
		case map[string]any:
			if last {
				delete(node, part.text)
				return
			}
			current = node[part.text]
		case []any:
			index, err := strconv.Atoi(part.text)
			if err != nil || index < 0 || index >= len(node) {
				return
			}
			if last {
				node[index] = nil
				return
			}
			current = node[index]
		default:
			return
		}
	}
}

// boolHook decodes true and false, and reports any other value in plain
// words, where mapstructure's weak decoding quotes strconv's error.
func boolHook(_, to reflect.Type, data any) (any, error) {
	if to.Kind() != reflect.Bool {
		return data, nil
	}
	text, ok := data.(string)
	if !ok {
		return data, nil
	}
	value, err := strconv.ParseBool(strings.TrimSpace(text))
	if err != nil {
		return nil, fmt.Errorf("%q is not true or false", text)
	}
	return value, nil
}

// decodeLeaves returns each DecodeError in mapstructure's tree of errors,
// and any other error at a leaf. The tree's root wraps joined errors in a
// single-error wrapper, which errors.As would search only as far as the
// first DecodeError, so every problem after it would go unreported.
func decodeLeaves(err error) []error {
	if decodeErr, ok := err.(*mapstructure.DecodeError); ok {
		return []error{decodeErr}
	}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		var leaves []error
		for _, inner := range joined.Unwrap() {
			leaves = append(leaves, decodeLeaves(inner)...)
		}
		return leaves
	}
	if inner := errors.Unwrap(err); inner != nil {
		return decodeLeaves(inner)
	}
	return []error{err}
}

// enclosingEntry returns the key path of the outermost map entry or list
// item in key, such as "engines.R" for "engines.R.backends[0].address" or
// "listeners[1]" for "listeners[1].address", or "" when key is in no entry.
func enclosingEntry(key string) string {
	switch {
	case strings.HasPrefix(key, "engines."):
		rest := strings.TrimPrefix(key, "engines.")
		if end := strings.IndexAny(rest, ".["); end >= 0 {
			return "engines." + rest[:end]
		}
		return key
	case strings.HasPrefix(key, "listeners["):
		if end := strings.IndexByte(key, ']'); end >= 0 {
			return key[:end+1]
		}
	}
	return ""
}

// keyPath rewrites a mapstructure field name such as
// "engines[ssepython].functions[sumofrows].replay" as
// "engines.SSEPython.functions.SumOfRows.replay".
func keyPath(name string, spelling keySpelling) string {
	var out strings.Builder
	for i, part := range nameParts(name) {
		if !part.bracketed {
			if i > 0 {
				out.WriteString(".")
			}
			out.WriteString(part.text)
			continue
		}
		if _, err := strconv.Atoi(part.text); err == nil {
			out.WriteString("[" + part.text + "]")
		} else {
			// The path so far is the map's path, which distinguishes an
			// engine name from a function name spelt alike.
			out.WriteString("." + spelling.spell(out.String(), part.text))
		}
	}
	return out.String()
}

// namePart is one step of a mapstructure field name: a struct field, or a
// map key or list index, which the name writes in brackets.
type namePart struct {
	text      string
	bracketed bool
}

// nameParts splits a mapstructure field name, such as
// "engines[r].backends[0].address", into its steps. From a bracket that is
// not closed on, the rest of the name is one plain step.
func nameParts(name string) []namePart {
	var parts []namePart
	fields := func(text string) {
		for field := range strings.SplitSeq(text, ".") {
			if field != "" {
				parts = append(parts, namePart{text: field})
			}
		}
	}
	for name != "" {
		open := strings.IndexByte(name, '[')
		if open < 0 {
			fields(name)
			break
		}
		end := strings.IndexByte(name[open:], ']')
		if end < 0 {
			parts = append(parts, namePart{text: name})
			break
		}
		fields(name[:open])
		parts = append(parts, namePart{text: name[open+1 : open+end], bracketed: true})
		name = name[open+end+1:]
	}
	return parts
}

func flatten(errs []error) []error {
	var out []error
	for _, err := range errs {
		if err == nil {
			continue
		}
		if joined, ok := err.(interface{ Unwrap() []error }); ok {
			out = append(out, flatten(joined.Unwrap())...)
			continue
		}
		out = append(out, err)
	}
	slices.SortFunc(out, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return out
}
