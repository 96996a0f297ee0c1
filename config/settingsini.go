package config

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// SSEPlugin is one analytic connection from the SSEPlugin line of a
// QlikView Settings.ini: <EngineName>,<Host>:<Port>[,<PathToCertFolder>
// [,<RequestTimeout>[,<ReconnectTimeout>]]].
type SSEPlugin struct {
	// Position is the entry's place in the line, from 1, for messages.
	Position int
	Name     string
	Address  string
	// CertFolder is Qlik's certificate folder for the plugin, with
	// root_cert.pem, sse_client_cert.pem and sse_client_key.pem, without
	// the double quotes that may enclose it in the entry; empty for
	// plaintext.
	CertFolder string
	// RequestTimeout is 0 for none, Qlik's default.
	RequestTimeout time.Duration
	// ReconnectTimeout is Qlik's default of 20s when the field is empty.
	ReconnectTimeout time.Duration
	// Fields are the entry's raw fields, to write them back for the
	// gateway.
	Fields []string
}

// Qlik's defaults for the optional fields of an SSEPlugin entry.
const (
	QlikRequestTimeout   = 0
	QlikReconnectTimeout = 20 * time.Second
)

// ErrNoSSEPlugin means a Settings.ini has no SSEPlugin line under
// [Settings 7].
var ErrNoSSEPlugin = errors.New("no SSEPlugin= line under [Settings 7]")

// EntryError is a problem with one entry of an SSEPlugin line, which an
// import leaves out of the gateway's configuration.
type EntryError struct {
	Position int    // from 1, among the line's entries
	Entry    string // the entry as written, without surrounding spaces
	Err      error
}

func (e *EntryError) Error() string {
	return fmt.Sprintf("entry %d (%q): %v", e.Position, e.Entry, e.Err)
}

func (e *EntryError) Unwrap() error { return e.Err }

// IgnoredLineError is an SSEPlugin line that Windows' profile functions
// do not read, so QlikView does not use it and an import leaves it out.
type IgnoredLineError struct {
	Line int    // from 1, in the file
	Text string // the line as written, without surrounding spaces
	// Reason is the cause, and the fix for the file, as the message gives them.
	Reason string
}

func (e *IgnoredLineError) Error() string {
	return fmt.Sprintf("ignored line %d (%q): %s", e.Line, e.Text, e.Reason)
}

// ReadSSEPlugins finds the SSEPlugin line under [Settings 7] in the bytes
// of a QlikView Settings.ini and parses its entries. The file may be UTF-8
// with or without a byte order mark, or UTF-16 with one, with CRLF or LF
// line ends. The line is read as Windows' GetPrivateProfileString reads
// it (see findSetting). A malformed entry is reported in problems as an
// *EntryError, with its position, and the others are still returned.
// problems also holds an *IgnoredLineError for each other SSEPlugin line
// under [Settings 7], which Windows does not read.
func ReadSSEPlugins(data []byte) (plugins []SSEPlugin, problems []error, err error) {
	text, err := decodeSettingsText(data)
	if err != nil {
		return nil, nil, err
	}
	setting, ignored := findSetting(text, "Settings 7", "SSEPlugin")
	if setting.line == 0 {
		if len(ignored) > 0 {
			return nil, nil, fmt.Errorf("%w; %w", ErrNoSSEPlugin, ignored[0])
		}
		return nil, nil, ErrNoSSEPlugin
	}
	for _, line := range ignored {
		problems = append(problems, line)
	}

	names := map[string]int{}
	position := 0
	for entry := range strings.SplitSeq(setting.value, ";") {
		if strings.TrimSpace(entry) == "" {
			continue
		}
		position++
		plugin, err := parseSSEPlugin(position, entry)
		if err != nil {
			problems = append(problems, &EntryError{Position: position, Entry: strings.TrimSpace(entry), Err: err})
			continue
		}
		if earlier, ok := names[strings.ToLower(plugin.Name)]; ok {
			err := fmt.Errorf("engine name %s is also entry %d; Qlik uses the first", plugin.Name, earlier)
			problems = append(problems, &EntryError{Position: position, Entry: strings.TrimSpace(entry), Err: err})
			continue
		}
		names[strings.ToLower(plugin.Name)] = position
		plugins = append(plugins, plugin)
	}
	return plugins, problems, nil
}

// parseSSEPlugin parses one entry of an SSEPlugin line.
func parseSSEPlugin(position int, entry string) (SSEPlugin, error) {
	fields := strings.Split(entry, ",")
	for i := range fields {
		fields[i] = strings.TrimSpace(fields[i])
	}
	if len(fields) < 2 {
		return SSEPlugin{}, errors.New("needs at least <EngineName>,<Host>:<Port>")
	}
	if len(fields) > 5 {
		return SSEPlugin{}, fmt.Errorf("has %d fields, at most 5: <EngineName>,<Host>:<Port>,<PathToCertFolder>,<RequestTimeout>,<ReconnectTimeout>", len(fields))
	}
	plugin := SSEPlugin{Position: position, Name: fields[0], Address: fields[1], ReconnectTimeout: QlikReconnectTimeout, Fields: fields}
	if !engineNamePattern.MatchString(plugin.Name) {
		return SSEPlugin{}, fmt.Errorf("engine name %q: use letters, digits and underscores, not starting with a digit", plugin.Name)
	}
	if err := checkDialAddress(plugin.Address); err != nil {
		return SSEPlugin{}, err
	}
	if len(fields) > 2 {
		// Windows does not allow a double quote in a file name, so quotes
		// around the folder can only enclose it, as an admin may write a
		// path with spaces. Kept, they would become part of the folder's
		// name in the gateway's configuration.
		plugin.CertFolder = trimQuotes(fields[2], `"`)
	}
	if len(fields) > 3 && fields[3] != "" {
		seconds, err := strconv.ParseInt(fields[3], 10, 64)
		if err != nil || seconds < 0 || seconds > maxSettingsSeconds {
			return SSEPlugin{}, fmt.Errorf("request timeout %q: write whole seconds, 0 for none", fields[3])
		}
		plugin.RequestTimeout = time.Duration(seconds) * time.Second
	}
	if len(fields) > 4 && fields[4] != "" {
		seconds, err := strconv.ParseInt(fields[4], 10, 64)
		if err != nil || seconds < 0 || seconds > maxSettingsSeconds {
			return SSEPlugin{}, fmt.Errorf("reconnect timeout %q: write whole seconds", fields[4])
		}
		plugin.ReconnectTimeout = time.Duration(seconds) * time.Second
	}
	return plugin, nil
}

// maxSettingsSeconds is the longest timeout a time.Duration holds, about
// 292 years: more would wrap around to a wrong or negative duration.
const maxSettingsSeconds = math.MaxInt64 / int64(time.Second)

// decodeSettingsText returns the text of a Settings.ini, decoding UTF-16
// with a byte order mark (QlikView writes UTF-16) and dropping a UTF-8 one.
// It rejects UTF-16 without a byte order mark.
func decodeSettingsText(data []byte) (string, error) {
	switch {
	case bytes.HasPrefix(data, []byte{0xef, 0xbb, 0xbf}):
		return string(data[3:]), nil
	case bytes.HasPrefix(data, []byte{0xff, 0xfe}), bytes.HasPrefix(data, []byte{0xfe, 0xff}):
		if len(data)%2 != 0 {
			return "", errors.New("reading Settings.ini: UTF-16 text with an odd number of bytes")
		}
		units := make([]uint16, 0, len(data)/2-1)
		for i := 2; i+1 < len(data); i += 2 {
			if data[0] == 0xff {
				units = append(units, uint16(data[i])|uint16(data[i+1])<<8)
			} else {
				units = append(units, uint16(data[i])<<8|uint16(data[i+1]))
			}
		}
		return string(utf16.Decode(units)), nil
	}

	// Read as UTF-8, such a file has a NUL byte next to each ASCII
	// character, so no line would match and the import would report a
	// missing SSEPlugin line that the admin can see in the file. The file
	// is rejected rather than decoded, because QlikView may not read it
	// either: the tests cited at findSetting saw Windows' profile
	// functions read UTF-16 only with a byte order mark.
	if order := utf16WithoutBOM(data); order != "" {
		return "", fmt.Errorf("reading Settings.ini: the file looks like %s text without a byte order mark, as NUL bytes alternate with ASCII characters; save it as UTF-8, or as UTF-16 with a byte order mark as QlikView writes it, and import again", order)
	}
	return string(data), nil
}

// utf16WithoutBOM returns "UTF-16 LE" or "UTF-16 BE" when data looks like
// UTF-16 in that byte order, and "" otherwise. It looks for 2-byte units
// of an ASCII character and a NUL byte, in one order in at least half of
// the units. UTF-8 and the ANSI code pages write no NUL bytes in text,
// while a Settings.ini in UTF-16 has ASCII section and key names.
func utf16WithoutBOM(data []byte) string {
	units := len(data) / 2
	little, big := 0, 0
	for i := 0; i+1 < len(data); i += 2 {
		first, second := data[i], data[i+1]
		switch {
		case second == 0 && first != 0 && first < utf8.RuneSelf:
			little++
		case first == 0 && second != 0 && second < utf8.RuneSelf:
			big++
		}
	}
	switch {
	case units == 0:
		return ""
	case 2*little >= units && little > big:
		return "UTF-16 LE"
	case 2*big >= units && big > little:
		return "UTF-16 BE"
	}
	return ""
}

// iniSetting is the value of an INI key and the line it is on, from 1; a
// line of 0 means the key was not found.
type iniSetting struct {
	value string
	line  int
}

// findSetting returns the value of key in section of an INI text as
// Windows' GetPrivateProfileString reads it, and the other lines with key
// in that section, which it ignores. Section and key names ignore case.
// Only the first section of that name counts, and in it only the first
// line with key. One pair of matching single or double quotes around the
// value is dropped. Microsoft's documentation of the function describes
// the quotes and the case. It does not describe the first-line and
// first-section rules, which tests against Windows found; see
// documentation/GetPrivateProfileString.md in
// github.com/WelliSolutions/IniFileFormatReverseEngineering.
func findSetting(text, section, key string) (iniSetting, []*IgnoredLineError) {
	var setting iniSetting
	var ignored []*IgnoredLineError
	headers := 0     // the times section has started so far
	firstHeader := 0 // the line where section starts first
	inSection := false
	number := 0
	for line := range strings.SplitSeq(text, "\n") {
		number++
		line = strings.TrimSpace(strings.TrimSuffix(line, "\r"))
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			inSection = strings.EqualFold(strings.TrimSpace(line[1:len(line)-1]), section)
			if inSection {
				headers++
				if headers == 1 {
					firstHeader = number
				}
			}
			continue
		}
		if !inSection {
			continue
		}
		name, rest, ok := strings.Cut(line, "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(name), key) {
			continue
		}
		switch {
		case headers > 1:
			ignored = append(ignored, &IgnoredLineError{Line: number, Text: line, Reason: fmt.Sprintf(
				"[%s] starts again above it, and Windows reads only the first [%s], at line %d; move the line's entries there", section, section, firstHeader)})
		case setting.line > 0:
			ignored = append(ignored, &IgnoredLineError{Line: number, Text: line, Reason: fmt.Sprintf(
				"line %d sets %s earlier in [%s], and Windows reads only the first; delete line %d, or move its entries into line %d", setting.line, key, section, number, setting.line)})
		default:
			setting = iniSetting{value: trimQuotes(strings.TrimSpace(rest), `"'`), line: number}
		}
	}
	return setting, ignored
}

// trimQuotes returns text without one pair of quotes around it, when it
// starts and ends with the same character of quotes.
func trimQuotes(text, quotes string) string {
	if len(text) >= 2 && text[0] == text[len(text)-1] && strings.IndexByte(quotes, text[0]) >= 0 {
		return text[1 : len(text)-1]
	}
	return text
}

// GatewayOptions say where the gateway listens for an imported
// Settings.ini.
type GatewayOptions struct {
	// Mode is "ports", one listener per engine from BasePort up, or
	// "hosts", one listener at BasePort where each engine has a host name
	// "<engine in lower case>.<GatewayHost>".
	Mode        string
	ListenHost  string // such as 0.0.0.0
	BasePort    int
	GatewayHost string // the name Qlik uses for the gateway
	// TLSDir is the gateway's own certificate folder, as written by certs
	// init (gateway/).
	TLSDir string
	// QlikCertFolder is where Qlik keeps the gateway's client folder
	// (qlik/), as a path on the Qlik server.
	QlikCertFolder string
	// Skipped are the entries left out of the import, as written. Qlik
	// keeps calling their plugins directly, so the gateway takes none of
	// their ports either.
	Skipped []string
	// LocalHosts are other names and addresses of the host the gateway
	// will run on, such as its host name and interface addresses: plugins
	// at those keep their ports, as plugins at localhost do.
	LocalHosts []string
}

// GatewayForPlugins returns a gateway configuration for the analytic
// connections of a Settings.ini, and the SSEPlugin line that points Qlik
// at the gateway instead. Each plugin becomes an engine: its address, its
// certificate folder as the backend's TLS folder (Qlik's client layout is
// the one a backend needs), its request timeout, and its reconnect timeout
// as the engine's reconnect_buffer.
func GatewayForPlugins(plugins []SSEPlugin, opts GatewayOptions) (*Config, string, error) {
	if opts.Mode != "ports" && opts.Mode != "hosts" {
		return nil, "", fmt.Errorf("mode %q: use ports or hosts", opts.Mode)
	}
	if strings.TrimSpace(opts.TLSDir) == "" {
		return nil, "", errors.New("the gateway's certificate folder is empty, but every listener needs it for TLS")
	}
	if err := CheckQlikCertFolder(opts.QlikCertFolder); err != nil {
		return nil, "", fmt.Errorf("certificate folder for Qlik %q: %w", opts.QlikCertFolder, err)
	}
	cfg := &Config{Engines: map[string]*Engine{}}
	var entries []string
	port := opts.BasePort
	busy := map[int]bool{}
	addresses := make([]string, 0, len(plugins)+len(opts.Skipped))
	for _, plugin := range plugins {
		addresses = append(addresses, plugin.Address)
	}
	for _, entry := range opts.Skipped {
		// The address of an entry that failed to parse is its second
		// field, if anything.
		if fields := strings.Split(entry, ","); len(fields) > 1 {
			addresses = append(addresses, strings.TrimSpace(fields[1]))
		}
	}
	for _, address := range addresses {
		// The gateway may run on the plugins' host, named as such or by
		// the name Qlik will use for the gateway: skip their ports.
		host, portText, err := net.SplitHostPort(address)
		if err == nil && (isLocalHost(host) || sameHost(host, opts.GatewayHost) || slices.ContainsFunc(opts.LocalHosts, func(local string) bool { return sameHost(host, local) })) {
			if n, err := strconv.Atoi(portText); err == nil {
				busy[n] = true
			}
		}
	}
	nextPort := func() int {
		for busy[port] {
			port++
		}
		busy[port] = true
		return port
	}
	var shared int
	if opts.Mode == "hosts" {
		shared = nextPort()
		cfg.Listeners = append(cfg.Listeners, Listener{Address: net.JoinHostPort(opts.ListenHost, strconv.Itoa(shared)), TLS: &ServerTLS{Dir: opts.TLSDir}})
	}

	for _, plugin := range plugins {
		reconnect := plugin.ReconnectTimeout
		engine := &Engine{
			Name:            plugin.Name,
			RequestTimeout:  plugin.RequestTimeout,
			ReconnectBuffer: &reconnect,
			Backends:        []Backend{{Address: plugin.Address}},
		}
		if plugin.CertFolder != "" {
			engine.Backends[0].TLS = &ClientTLS{Dir: plugin.CertFolder}
		}
		cfg.Engines[plugin.Name] = engine

		// Qlik's side: the same name and optional fields, the gateway's
		// address and client folder.
		address := ""
		switch opts.Mode {
		case "ports":
			listenPort := nextPort()
			cfg.Listeners = append(cfg.Listeners, Listener{
				Address: net.JoinHostPort(opts.ListenHost, strconv.Itoa(listenPort)),
				Engine:  plugin.Name,
				TLS:     &ServerTLS{Dir: opts.TLSDir},
			})
			address = net.JoinHostPort(opts.GatewayHost, strconv.Itoa(listenPort))
		case "hosts":
			host := strings.ToLower(plugin.Name) + "." + opts.GatewayHost
			engine.Hosts = []string{host}
			address = net.JoinHostPort(host, strconv.Itoa(shared))
		}
		fields := []string{plugin.Name, address, opts.QlikCertFolder}
		fields = append(fields, plugin.Fields[min(3, len(plugin.Fields)):]...)
		entries = append(entries, strings.Join(fields, ","))
	}
	return cfg, "SSEPlugin=" + strings.Join(entries, ";"), nil
}

// CheckQlikCertFolder returns an error when folder cannot be written as
// the certificate folder of an SSEPlugin entry. Qlik splits the line into
// entries at each ';' and an entry into fields at each ',', and a control
// character such as a line break would end the line. An empty folder
// makes Qlik connect without TLS, which the gateway's listeners reject.
func CheckQlikCertFolder(folder string) error {
	if strings.TrimSpace(folder) == "" {
		return errors.New("is empty, so Qlik would connect without TLS, but the gateway's listeners require TLS; give the folder on the Qlik server that contains the gateway's client certificates")
	}
	if i := strings.IndexAny(folder, ";,"); i >= 0 {
		if folder[i] == ';' {
			return errors.New("contains ';', which separates the entries of an SSEPlugin line, so Qlik would read the rest of the folder as another entry; use a folder whose path has no ';' or ','")
		}
		return errors.New("contains ',', which separates the fields of an SSEPlugin entry, so Qlik would read the rest of the folder as the request timeout; use a folder whose path has no ';' or ','")
	}
	if i := strings.IndexFunc(folder, unicode.IsControl); i >= 0 {
		character, _ := utf8.DecodeRuneInString(folder[i:])
		return fmt.Errorf("contains %U, a control character or line break, which would break the SSEPlugin line; remove it", character)
	}
	return nil
}

// sameHost reports whether two host names or addresses are the same,
// regardless of case and of a trailing dot.
func sameHost(a, b string) bool {
	if ipA, ipB := net.ParseIP(a), net.ParseIP(b); ipA != nil && ipB != nil {
		return ipA.Equal(ipB)
	}
	return strings.EqualFold(strings.TrimSuffix(a, "."), strings.TrimSuffix(b, "."))
}

func isLocalHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && (ip.IsLoopback() || ip.IsUnspecified())
}
