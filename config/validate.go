package config

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/ssegw/ssegw/tlsutil"
)

// engineNamePattern is what Qlik accepts in the engine part of an
// expression such as SSEPython.SumOfRows.
var engineNamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Validate reports every problem in the configuration, one error per
// problem, joined. It also loads each certificate folder, so that a
// missing, unreadable or mismatched file is named before anything listens.
func (c *Config) Validate() error {
	return c.validate(nil, nil)
}

// validate is Validate for a Config decoded from a file. Its messages
// spell function names as spelling records them. A key in failedKeys, or
// one inside it, failed to decode and has its default value here. Checks
// that combine such a key with other keys are skipped, because they would
// report a problem that only follows from the decoding problem.
func (c *Config) validate(spelling keySpelling, failedKeys []string) error {
	var problems []error
	report := func(format string, args ...any) {
		problems = append(problems, fmt.Errorf(format, args...))
	}
	decodeFailed := func(key string) bool {
		return slices.ContainsFunc(failedKeys, func(failedKey string) bool {
			return failedKey == key || strings.HasPrefix(failedKey, key+".") || strings.HasPrefix(failedKey, key+"[")
		})
	}
	names := c.EngineNames()

	// Listeners.
	if len(c.Listeners) == 0 {
		report("listeners: none configured; add at least one address for Qlik to connect to")
	}
	seen := listenerPorts{}
	for i, listener := range c.Listeners {
		key := fmt.Sprintf("listeners[%d]", i)
		if err := checkListenAddress(listener.Address); err != nil {
			report("%s.address: %w", key, err)
		} else if j, ok := seen.conflict(listener.Address); ok {
			report("%s.address: %q is already used by listeners[%d]; each listener needs its own port", key, listener.Address, j)
		} else {
			seen.add(listener.Address, i)
		}
		if listener.Engine != "" && c.Engine(listener.Engine) == nil {
			report("%s.engine: unknown engine %q; configured engines: %s", key, listener.Engine, strings.Join(names, ", "))
		}
		plaintext := listener.TLS == nil && listener.Insecure && !listener.InsecureRemote
		if plaintext && !decodeFailed(key+".tls") && !decodeFailed(key+".insecure_remote") && checkListenAddress(listener.Address) == nil && !IsLoopbackAddress(listener.Address) {
			report("%s: plaintext on %q, which other hosts can reach; listen on 127.0.0.1, use tls, or also set insecure_remote: true", key, listener.Address)
		}
		switch {
		case listener.TLS == nil && !listener.Insecure:
			if !decodeFailed(key+".tls") && !decodeFailed(key+".insecure") {
				report("%s: no tls section; give tls.dir for mutual TLS, or set insecure: true to accept plaintext", key)
			}
		case listener.TLS != nil && listener.Insecure:
			report("%s: both tls and insecure: true are set; choose one", key)
		case listener.TLS != nil && missingFolder(listener.TLS.Dir):
			report("%s.tls.dir: folder %s not found; make a certificate set with ssegw certs init and give its gateway folder", key, listener.TLS.Dir)
		case listener.TLS != nil && listener.TLS.Dir != "" && listener.TLS.CertFile == "" && tlsutil.FolderKind(listener.TLS.Dir) == tlsutil.ClientFolder:
			report("%s.tls.dir: %s holds a client certificate (%s), as Qlik's folder does; a listener needs the gateway's folder with %s, such as gateway/ from ssegw certs init",
				key, listener.TLS.Dir, tlsutil.ClientCertFile, tlsutil.ServerCertFile)
		case listener.TLS != nil && listener.TLS.Dir != "" && listener.TLS.CertFile == "" && tlsutil.FolderKind(listener.TLS.Dir) == tlsutil.SetFolder:
			report("%s.tls.dir: %s is a whole certificate set, as ssegw certs init makes it; give its gateway folder, %s",
				key, listener.TLS.Dir, filepath.Join(listener.TLS.Dir, tlsutil.GatewayFolder))
		case listener.TLS != nil && decodeFailed(key+".tls"):
			// When a key of the section failed to decode, its file falls
			// back to the default in dir, or to none without dir, so the
			// files loaded here are not the ones the configuration names.
		case listener.TLS != nil:
			if _, err := listener.TLS.Files().ServerConfig(); err != nil {
				problems = append(problems, prefixEach(key+".tls", err)...)
			}
		}
	}

	// Engines, in name order so that the messages come out stable.
	if len(c.Engines) == 0 {
		report("engines: none configured; add at least one engine with its backends")
	}
	admin := c.adminPorts()
	hostOwner := map[string]string{}
	for _, name := range names {
		engine := c.Engine(name)
		key := "engines." + name
		if !engineNamePattern.MatchString(name) {
			report("%s: invalid engine name; Qlik engine names hold letters, digits and underscores and do not start with a digit", key)
		}
		if engine.RequestTimeout < 0 {
			report("%s.request_timeout: %v is negative; use 0 for no limit", key, engine.RequestTimeout)
		}
		if engine.ProbeInterval < 100*time.Millisecond {
			report("%s.probe_interval: %v is too short; use 100ms or more", key, engine.ProbeInterval)
		}
		if engine.ProbeTimeout <= 0 {
			report("%s.probe_timeout: %v must be positive", key, engine.ProbeTimeout)
		}
		if engine.DNSInterval < time.Second {
			report("%s.dns_interval: %v is too short; use 1s or more", key, engine.DNSInterval)
		}
		c.validatePolicy(engine, key, spelling, report)
		for i, host := range engine.Hosts {
			normalized := NormalizeHost(host)
			if normalized == "" || strings.ContainsAny(normalized, ":/ ") {
				report("%s.hosts[%d]: %q is not a host name", key, i, host)
				continue
			}
			if owner, ok := hostOwner[normalized]; ok && owner != name {
				report("%s.hosts[%d]: %q is also a host of engine %s; a host name must select one engine", key, i, host, owner)
				continue
			}
			hostOwner[normalized] = name
		}
		switch {
		case len(engine.Merge) > 0:
			c.validateMerge(engine, key, report)
		case len(engine.Backends) == 0:
			report("%s.backends: none configured; add the plugin's address, or merge: other engines", key)
		}
		if len(engine.Merge) == 0 {
			if engine.MergePrefix != "" {
				report("%s.merge_prefix: applies only to an engine with merge", key)
			}
			if engine.MergeScripts != "" {
				report("%s.merge_scripts: applies only to an engine with merge", key)
			}
		}
		backends := map[string]int{}
		for i, backend := range engine.Backends {
			backendKey := fmt.Sprintf("%s.backends[%d]", key, i)
			if err := checkDialAddress(backend.Address); err != nil {
				report("%s.address: %w", backendKey, err)
			} else if j, ok := backends[backend.Address]; ok {
				report("%s.address: %q is listed twice, also as backends[%d]", backendKey, backend.Address, j)
			} else if j, ok := seen.reaches(backend.Address); ok && !backend.DNS {
				report("%s.address: %q is the gateway's own listeners[%d], so each call would come back to the gateway; give the plugin's address", backendKey, backend.Address, j)
			} else if _, ok := admin.reaches(backend.Address); ok && !backend.DNS {
				report("%s.address: %q is the gateway's own admin listener, which serves no gRPC; give the plugin's address", backendKey, backend.Address)
			} else {
				backends[backend.Address] = i
			}
			switch {
			case backend.TLS != nil && missingFolder(backend.TLS.Dir):
				report("%s.tls.dir: folder %s not found; give a client folder as Qlik uses for the plugin, or make one with ssegw certs init --ca", backendKey, backend.TLS.Dir)
			case backend.TLS != nil && backend.TLS.Dir != "" && backend.TLS.CertFile == "" && tlsutil.FolderKind(backend.TLS.Dir) == tlsutil.SetFolder:
				report("%s.tls.dir: %s is a whole certificate set, as ssegw certs init makes it; give a client folder, such as its qlik folder %s when the plugin trusts that set's CA",
					backendKey, backend.TLS.Dir, filepath.Join(backend.TLS.Dir, tlsutil.QlikFolder))
			case backend.TLS != nil && backend.TLS.Dir != "" && backend.TLS.CertFile == "" && tlsutil.FolderKind(backend.TLS.Dir) == tlsutil.ServerFolder:
				report("%s.tls.dir: %s holds a server certificate (%s), as the gateway's and a plugin's folders do; a backend needs a client folder with %s, such as Qlik uses for the plugin, or one made by ssegw certs init --ca",
					backendKey, backend.TLS.Dir, tlsutil.ServerCertFile, tlsutil.ClientCertFile)
			case backend.TLS != nil && decodeFailed(backendKey+".tls"):
				// As for a listener, the files loaded here are not the
				// ones the configuration names.
			case backend.TLS != nil:
				if _, err := backend.TLS.Files().ClientConfig(""); err != nil {
					problems = append(problems, prefixEach(backendKey+".tls", err)...)
				}
			}
		}
	}

	// Process-wide settings.
	switch {
	case c.Limits.MaxMessageSize < 1024:
		report("limits.max_message_size: %v is too small; Qlik's own limit is 4MiB", c.Limits.MaxMessageSize)
	case c.Limits.MaxMessageSize > 1<<30:
		// Every call may hold one message of this size in each direction.
		report("limits.max_message_size: %v is too large; use at most 1GiB", c.Limits.MaxMessageSize)
	}
	if c.Limits.MaxHeaderListSize < 8<<10 || c.Limits.MaxHeaderListSize > 1<<30 {
		report("limits.max_header_list_size: %v is out of range; use 8KiB to 1GiB", c.Limits.MaxHeaderListSize)
	}
	if c.Keepalive.MinPingInterval < 0 {
		report("keepalive.min_ping_interval: %v is negative", c.Keepalive.MinPingInterval)
	}
	if c.Keepalive.BackendPingInterval < 10*time.Second {
		report("keepalive.backend_ping_interval: %v is below 10s, which gRPC does not allow", c.Keepalive.BackendPingInterval)
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		report("log.level: unknown level %q; use debug, info, warn or error", c.Log.Level)
	}
	if !slices.Contains([]string{"text", "json"}, c.Log.Format) {
		report("log.format: unknown format %q; use text or json", c.Log.Format)
	}
	c.validateObservability(report)
	if c.DrainTimeout < 0 {
		report("drain_timeout: %v is negative", c.DrainTimeout)
	}
	if c.CertificateExpiryWarning < 0 {
		report("certificate_expiry_warning: %v is negative", c.CertificateExpiryWarning)
	}
	if c.Limits.StreamWindow < 64<<10 || c.Limits.StreamWindow > 64<<20 {
		// gRPC ignores a window under 64KiB and grows it by itself then,
		// which would lift the bound on memory per call.
		report("limits.stream_window: %v is out of range; use 64KiB to 64MiB", c.Limits.StreamWindow)
	}
	if c.Limits.MaxConnections < 0 {
		report("limits.max_connections: %d is negative", c.Limits.MaxConnections)
	}
	if wait := c.Limits.FirstMessageTimeout; wait != nil && *wait < 0 {
		report("limits.first_message_timeout: %v is negative; use 0 for no limit", *wait)
	}
	return errors.Join(problems...)
}

// validateMerge reports problems in a merged engine.
func (c *Config) validateMerge(engine *Engine, key string, report func(string, ...any)) {
	if len(engine.Backends) > 0 {
		report("%s: has both merge and backends; a merged engine calls its members' backends", key)
	}
	seen := map[string]bool{}
	for i, name := range engine.Merge {
		member := c.Engine(name)
		switch {
		case member == nil:
			report("%s.merge[%d]: unknown engine %q; configured engines: %s", key, i, name, strings.Join(c.EngineNames(), ", "))
		case member == engine:
			report("%s.merge[%d]: an engine cannot merge itself", key, i)
		case len(member.Merge) > 0:
			report("%s.merge[%d]: %s is itself merged; merge its members instead", key, i, name)
		case seen[strings.ToLower(name)]:
			report("%s.merge[%d]: %s is listed twice", key, i, name)
		}
		seen[strings.ToLower(name)] = true
	}
	if engine.MergeScripts != "" && !seen[strings.ToLower(engine.MergeScripts)] {
		report("%s.merge_scripts: %q is not one of the merged engines", key, engine.MergeScripts)
	}
	if !strings.Contains(engine.MergePrefix, "{engine}") {
		report("%s.merge_prefix: %q lacks {engine}, so renamed functions of two members could collide again", key, engine.MergePrefix)
	} else if rest := strings.ReplaceAll(engine.MergePrefix, "{engine}", ""); strings.ContainsFunc(rest, notNameRune) {
		report("%s.merge_prefix: %q has characters other than letters, digits and _ besides {engine}, and Qlik cannot call a function whose name has them", key, engine.MergePrefix)
	}

	// A merged engine's calls run under the settings of the member they
	// reach. These keys would change nothing, and an admin who set
	// request_timeout here would believe the calls bounded.
	unused := []struct {
		key string
		set bool
	}{
		{"request_timeout", engine.RequestTimeout != 0},
		{"probe_interval", engine.ProbeInterval != DefaultProbeInterval},
		{"probe_timeout", engine.ProbeTimeout != DefaultProbeTimeout},
		{"dns_interval", engine.DNSInterval != DefaultDNSInterval},
		{"balancer", engine.Balancer != BalancerLeastRequest},
		{"reconnect_buffer", engine.ReconnectBuffer != nil},
		{"replay", engine.Replay != nil},
		{"replay_buffer", engine.ReplayBuffer != DefaultReplayBuffer},
		{"max_attempts", engine.MaxAttempts != DefaultMaxAttempts},
		{"max_in_flight", engine.MaxInFlight != 0},
		{"functions", len(engine.Functions) > 0},
	}
	for _, setting := range unused {
		if setting.set {
			report("%s.%s: has no effect on a merged engine, whose calls run under the settings of the member they reach; set it on the members (%s)",
				key, setting.key, strings.Join(engine.Merge, ", "))
		}
	}
}

// notNameRune reports whether r may not be part of a function name that
// a Qlik expression can call.
func notNameRune(r rune) bool {
	return !(r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r))
}

// validatePolicy reports problems in an engine's call policy.
func (c *Config) validatePolicy(engine *Engine, key string, spelling keySpelling, report func(string, ...any)) {
	if engine.Balancer != BalancerLeastRequest && engine.Balancer != BalancerRoundRobin {
		report("%s.balancer: unknown balancer %q; use least_request or round_robin", key, engine.Balancer)
	}
	if engine.ReconnectBuffer != nil && *engine.ReconnectBuffer < 0 {
		report("%s.reconnect_buffer: %v is negative; use 0 to fail at once", key, *engine.ReconnectBuffer)
	}
	if engine.MaxWaiting < 0 {
		report("%s.max_waiting: %d is negative", key, engine.MaxWaiting)
	}
	if engine.ReplayBuffer < 0 {
		report("%s.replay_buffer: %v is negative", key, engine.ReplayBuffer)
	}
	if engine.MaxAttempts < 1 || engine.MaxAttempts > 10 {
		report("%s.max_attempts: %d is out of range; use 1 to 10", key, engine.MaxAttempts)
	}
	if engine.MaxInFlight < 0 {
		report("%s.max_in_flight: %d is negative; use 0 for no limit", key, engine.MaxInFlight)
	}
	if !slices.Contains([]string{ScriptsAllow, ScriptsAudit, ScriptsDeny}, engine.Scripts) {
		report("%s.scripts: unknown policy %q; use allow, audit or deny", key, engine.Scripts)
	}
	if engine.MaxScriptBytes < 0 {
		report("%s.max_script_bytes: %v is negative; use 0 for no cap", key, engine.MaxScriptBytes)
	}
	if engine.MaxCardinality < 0 {
		report("%s.max_cardinality: %d is negative; use 0 for no limit", key, engine.MaxCardinality)
	}
	for i, client := range engine.AllowClients {
		if hash, ok := strings.CutPrefix(client, pinPrefix); ok && !isSHA256Hex(hash) {
			report("%s.allow_clients[%d]: %q: write sha256: and the 64 hex digits of the public key's SHA-256", key, i, client)
		}
		if strings.TrimSpace(client) == "" {
			report("%s.allow_clients[%d]: empty", key, i)
		}
	}
	for name, function := range engine.Functions {
		functionKey := key + ".functions." + spelling.spell(key+".functions", name)
		if function == nil {
			report("%s: empty; give request_timeout, replay or max_attempts", functionKey)
			continue
		}
		if function.RequestTimeout != nil && *function.RequestTimeout < 0 {
			report("%s.request_timeout: %v is negative; use 0 for no limit", functionKey, *function.RequestTimeout)
		}
		if function.MaxAttempts < 0 || function.MaxAttempts > 10 {
			report("%s.max_attempts: %d is out of range; use 1 to 10", functionKey, function.MaxAttempts)
		}
	}
}

// Engine returns the engine with the given name, ignoring case, or nil.
func (c *Config) Engine(name string) *Engine {
	if engine, ok := c.Engines[strings.ToLower(name)]; ok {
		return engine
	}
	for _, engine := range c.Engines {
		if strings.EqualFold(engine.Name, name) {
			return engine
		}
	}
	return nil
}

// EngineNames returns the engines' names, sorted.
func (c *Config) EngineNames() []string {
	names := make([]string, 0, len(c.Engines))
	for key, engine := range c.Engines {
		if engine != nil && engine.Name != "" {
			key = engine.Name
		}
		names = append(names, key)
	}
	slices.Sort(names)
	return names
}

// Files returns the certificate files this section names.
func (t *ServerTLS) Files() tlsutil.ServerFiles {
	return tlsutil.ServerFilesInDir(t.Dir, t.CertFile, t.KeyFile, t.ClientCAFile)
}

// Files returns the certificate files this section names.
func (t *ClientTLS) Files() tlsutil.ClientFiles {
	return tlsutil.ClientFilesInDir(t.Dir, t.CAFile, t.CertFile, t.KeyFile)
}

// IsLoopbackAddress reports whether a listen address can be reached from
// this host only.
func IsLoopbackAddress(address string) bool {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// pinPrefix starts an allow_clients entry that names a client by the
// SHA-256 of its public key.
const pinPrefix = "sha256:"

func isSHA256Hex(text string) bool {
	if len(text) != 64 {
		return false
	}
	_, err := hex.DecodeString(text)
	return err == nil
}

// missingFolder reports whether dir is set but is not an existing folder.
func missingFolder(dir string) bool {
	if dir == "" {
		return false
	}
	info, err := os.Stat(dir)
	return err != nil || !info.IsDir()
}

// NormalizeHost returns a host name as engines are matched by it: lower
// case, without a trailing dot.
func NormalizeHost(host string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(host)), ".")
}

func checkListenAddress(address string) error {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("invalid address %q: write host:port, such as 127.0.0.1:50051, an IPv6 address in brackets as [::1]:50051, or :50051 for every interface", address)
	}
	if host != "" && net.ParseIP(host) == nil && host != "localhost" {
		return fmt.Errorf("invalid address %q: listen on an IP address, localhost, or an empty host for every interface", address)
	}
	return checkPort(address, port, true)
}

func checkDialAddress(address string) error {
	host, port, err := net.SplitHostPort(address)
	if err != nil || host == "" {
		return fmt.Errorf("invalid address %q: write host:port, such as 127.0.0.1:50055", address)
	}
	if strings.ContainsFunc(host, unicode.IsSpace) {
		return fmt.Errorf("invalid address %q: the host contains a space", address)
	}
	return checkPort(address, port, false)
}

func checkPort(address, port string, zeroAllowed bool) error {
	// Digits only: Atoi also takes a sign, which no dialer does.
	n, err := strconv.Atoi(port)
	if err != nil || strings.Trim(port, "0123456789") != "" || n > 65535 || (n == 0 && !zeroAllowed) {
		return fmt.Errorf("invalid port in %q", address)
	}
	return nil
}

// listenerPorts maps each port to the listeners validated so far on it, so
// that each new listener is compared with those on its own port only.
// Ports are keyed by number, as 08080 and 8080 are one port to net.Listen.
type listenerPorts map[int][]boundListener

type boundListener struct {
	host  string
	index int
}

// conflict returns the index of an earlier listener that address would
// collide with: the same port on the same host, or on any host when
// either listens on all of them. Port 0 never collides.
func (p listenerPorts) conflict(address string) (int, bool) {
	host, port := listenHostPort(address)
	if port == 0 {
		return 0, false
	}
	for _, other := range p[port] {
		if other.host == host || isWildcard(host) || isWildcard(other.host) {
			return other.index, true
		}
	}
	return 0, false
}

// PortTakenBy returns the key of the listener or the admin listener that
// another server on address would collide with, as Validate compares the
// listeners: the same port on the same host, or on any host when either
// listens on all of them. It returns "" when none would.
func (c *Config) PortTakenBy(address string) string {
	if i, ok := c.listenerPorts().conflict(address); ok {
		return fmt.Sprintf("listeners[%d].address", i)
	}
	if _, ok := c.adminPorts().conflict(address); ok {
		return "admin.address"
	}
	return ""
}

// listenerPorts returns the ports of the listeners whose addresses are
// valid.
func (c *Config) listenerPorts() listenerPorts {
	ports := listenerPorts{}
	for i, listener := range c.Listeners {
		if checkListenAddress(listener.Address) == nil {
			ports.add(listener.Address, i)
		}
	}
	return ports
}

// adminPorts returns the port of the admin listener when it listens at a
// valid address.
func (c *Config) adminPorts() listenerPorts {
	ports := listenerPorts{}
	if c.Admin.Address != "none" && checkListenAddress(c.Admin.Address) == nil {
		ports.add(c.Admin.Address, 0)
	}
	return ports
}

// UnusableCertificates returns a warning for each certificate that a
// listener or a backend presents and that has expired or is not valid
// yet, and for CAs of which none is within its validity. They are not
// problems of the file: the gateway still serves its other listeners and
// engines, and picks up renewed files without a restart.
func (c *Config) UnusableCertificates(now time.Time) []string {
	var warnings []string
	sources, _ := c.listenerSources()
	for _, source := range sources {
		warnings = append(warnings, source.Unusable(now)...)
	}
	for _, name := range c.EngineNames() {
		for i, backend := range c.Engine(name).Backends {
			if backend.TLS == nil {
				continue
			}
			if source, err := tlsutil.NewClientSource(fmt.Sprintf("engines.%s.backends[%d].tls", name, i), backend.TLS.Files(), ""); err == nil {
				warnings = append(warnings, source.Unusable(now)...)
			}
		}
	}
	return warnings
}

// UncoveredHosts returns a warning for each engine host name that the
// certificate of no TLS listener lists, as read from the listeners'
// files. Qlik checks the name it connects by against the gateway's
// certificate, so calls by such a name fail the handshake. Without a TLS
// listener there is nothing to check.
func (c *Config) UncoveredHosts() []string {
	return c.UncoveredHostsOf(c.listenerSources())
}

// UnroutedEngines returns a warning for each engine that only a call
// naming it in the x-sse-engine header can reach: no listener has it as
// its engine, it has no hosts, and no merged engine has it as a member.
// Qlik sends no such header, so its calls meant for the engine would end
// with Unimplemented.
func (c *Config) UnroutedEngines() []string {
	// Engine names match regardless of case.
	reached := map[string]bool{}
	for _, listener := range c.Listeners {
		reached[strings.ToLower(listener.Engine)] = true
	}
	for _, name := range c.EngineNames() {
		for _, member := range c.Engine(name).Merge {
			reached[strings.ToLower(member)] = true
		}
	}
	var warnings []string
	for _, name := range c.EngineNames() {
		if len(c.Engine(name).Hosts) == 0 && !reached[strings.ToLower(name)] {
			warnings = append(warnings, fmt.Sprintf("engines.%s: no listener has it as its engine, it has no hosts, and no merged engine has it as a member, so Qlik cannot reach it (only tools that send the x-sse-engine header can); set a listener's engine, or the engine's hosts", name))
		}
	}
	return warnings
}

// listenerSources reads the certificates of each TLS listener whose files
// load, with its key (listeners[0].tls) as label.
func (c *Config) listenerSources() (sources []*tlsutil.Source, labels []string) {
	for i, listener := range c.Listeners {
		if listener.TLS == nil {
			continue
		}
		label := fmt.Sprintf("listeners[%d].tls", i)
		if source, err := tlsutil.NewServerSource(label, listener.TLS.Files()); err == nil {
			sources = append(sources, source)
			labels = append(labels, label)
		}
	}
	return sources, labels
}

// UncoveredHostsOf is UncoveredHosts for the TLS listeners' sources, named
// by labels, such as those of a running gateway.
func (c *Config) UncoveredHostsOf(sources []*tlsutil.Source, labels []string) []string {
	if len(sources) == 0 {
		return nil
	}
	var warnings []string
	for _, name := range c.EngineNames() {
		for _, host := range c.Engine(name).Hosts {
			covered := slices.ContainsFunc(sources, func(source *tlsutil.Source) bool {
				return source.VerifyHostname(NormalizeHost(host)) == nil
			})
			if !covered {
				warnings = append(warnings, fmt.Sprintf("engines.%s.hosts: %s is not a name in the certificate of %s, so Qlik's calls by this name over TLS fail the handshake; renew the certificate with every name that clients use in --hosts, this one included (ssegw certs check lists its current names, and certs init --force keeps the CA of a set it made)",
					name, host, strings.Join(labels, " or ")))
			}
		}
	}
	return warnings
}

// reaches returns the index of a listener that a dial of address would
// reach on this host: one on its port, on its host or on every address
// when the host is one of this machine's. A host name other than
// localhost is not looked up.
func (p listenerPorts) reaches(address string) (int, bool) {
	host, port := listenHostPort(address)
	for _, listener := range p[port] {
		if listener.host == host || isWildcard(listener.host) && isLocalAddress(host) {
			return listener.index, true
		}
	}
	return 0, false
}

// isLocalAddress reports whether host, from listenHostPort, is an address
// of this machine.
//
// NOTE: the interface lookup needs netlink sockets on Linux, which the
// systemd unit's RestrictAddressFamilies forbids. There it fails, so a
// backend at one of the host's own non-loopback addresses is not taken
// for the gateway itself. `ssegw validate` run from a shell still finds it.
func isLocalAddress(host string) bool {
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	if ip.IsLoopback() || ip.IsUnspecified() {
		return true
	}
	addresses, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, address := range addresses {
		if prefix, err := netip.ParsePrefix(address.String()); err == nil && prefix.Addr().Unmap() == ip {
			return true
		}
	}
	return false
}

// add records the listener at index with address.
func (p listenerPorts) add(address string, index int) {
	host, port := listenHostPort(address)
	p[port] = append(p[port], boundListener{host, index})
}

// listenHostPort returns the address that net.Listen binds for a valid
// listen address, with the host in one spelling: Go resolves localhost
// to the IPv4 loopback address, and binds an IPv4-mapped IPv6 address as
// the IPv4 one.
func listenHostPort(address string) (host string, port int) {
	host, portText, _ := net.SplitHostPort(address)
	port, _ = strconv.Atoi(portText)
	if strings.EqualFold(host, "localhost") {
		return "127.0.0.1", port
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		host = ip.Unmap().String()
	}
	return host, port
}

// isWildcard reports whether a host from listenHostPort is every address.
// Go listens on both IPv4 and IPv6 for each of them (with the default
// bindv6only of Linux), so they collide with any host on their port.
func isWildcard(host string) bool {
	return host == "" || host == "0.0.0.0" || host == "::"
}

// prefixEach puts key in front of each error joined in err.
func prefixEach(key string, err error) []error {
	var out []error
	for _, single := range flatten([]error{err}) {
		out = append(out, fmt.Errorf("%s: %w", key, single))
	}
	return out
}
