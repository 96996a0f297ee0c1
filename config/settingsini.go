package config

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
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
	// root_cert.pem, sse_client_cert.pem and sse_client_key.pem; empty for
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

// ReadSSEPlugins finds the SSEPlugin line under [Settings 7] in the bytes
// of a QlikView Settings.ini and parses its entries. The file may be UTF-8
// with or without a byte order mark, or UTF-16 with one, with CRLF or LF
// line ends. A malformed entry is reported in problems, with its position,
// and the others are still returned.
func ReadSSEPlugins(data []byte) (plugins []SSEPlugin, problems []error, err error) {
	text, err := decodeSettingsText(data)
	if err != nil {
		return nil, nil, err
	}
	line, ok := findSetting(text, "Settings 7", "SSEPlugin")
	if !ok {
		return nil, nil, ErrNoSSEPlugin
	}

	names := map[string]int{}
	position := 0
	for entry := range strings.SplitSeq(line, ";") {
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
		plugin.CertFolder = fields[2]
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
	return string(data), nil
}

// findSetting returns the value of key in section of an INI text. Section
// and key names ignore case, as Windows does.
func findSetting(text, section, key string) (string, bool) {
	inSection := false
	value, found := "", false
	for line := range strings.SplitSeq(text, "\n") {
		line = strings.TrimSpace(strings.TrimSuffix(line, "\r"))
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			inSection = strings.EqualFold(strings.TrimSpace(line[1:len(line)-1]), section)
			continue
		}
		if !inSection {
			continue
		}
		name, rest, ok := strings.Cut(line, "=")
		if ok && strings.EqualFold(strings.TrimSpace(name), key) {
			// The last line wins, as Windows' profile functions read it.
			value, found = strings.TrimSpace(rest), true
		}
	}
	return value, found
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
		if err == nil && (isLocalHost(host) || strings.EqualFold(host, opts.GatewayHost)) {
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

func isLocalHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && (ip.IsLoopback() || ip.IsUnspecified())
}
