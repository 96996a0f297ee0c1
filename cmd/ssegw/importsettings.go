package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/internal/shellquote"
	"github.com/ssegw/ssegw/tlsutil"
)

func newImportSettingsCommand() *cobra.Command {
	opts := config.GatewayOptions{}
	var out string
	var force bool
	cmd := &cobra.Command{
		Use:   "import-settings PATH",
		Short: "Write a gateway configuration from a QlikView Settings.ini",
		Long: `Read the SSEPlugin= line under [Settings 7] of a QlikView Settings.ini
(UTF-8, or UTF-16 with a byte order mark as QlikView writes it; quotes
around the value or a certificate folder are dropped, as Windows drops
them) and write a gateway configuration with one engine per analytic
connection: its address, its certificate folder as the backend's TLS
folder, its request timeout, and its reconnect timeout as the engine's
reconnect_buffer. Then print the SSEPlugin= line that points Qlik at the
gateway instead, with the gateway's client certificate folder for Qlik.

--mode ports gives each engine its own gateway port; --mode hosts gives
all engines one port, and each a host name <engine>.<gateway-host> that
must resolve to the gateway.

Malformed entries are reported with their position, and the others are
still imported; the command then exits with status 1, so that a script
can tell a partial import from a whole one. Like Windows, the import
reads only the first SSEPlugin= line under [Settings 7], and it warns
about the others with their line numbers. Entries with control characters or text that is not UTF-8,
which a YAML file cannot contain as written, are reported and skipped too.
The Settings.ini itself is never changed: an --out that names it, by any
path or link, is rejected, even with --force.

The configuration file is written to a temporary file first and then
renamed, so an existing file is either replaced whole or left as it was.`,
		Args: func(cmd *cobra.Command, args []string) error {
			switch len(args) {
			case 0:
				return errors.New("import-settings needs the path of the QlikView Settings.ini to read, the file with the SSEPlugin line under [Settings 7]: ssegw import-settings PATH")
			case 1:
				return nil
			}
			return fmt.Errorf("import-settings reads one Settings.ini, the path given as its argument, but got %d arguments: %q; give any other value with its flag, such as --out", len(args), args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return importSettings(cmd, args[0], out, force, opts)
		},
	}
	hostname, _ := os.Hostname()
	cmd.Flags().StringVarP(&out, "out", "o", "ssegw.yaml", "configuration file to write")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite the configuration file if it exists")
	cmd.Flags().StringVar(&opts.Mode, "mode", "ports", "ports (a gateway port per engine) or hosts (one port, a host name per engine)")
	cmd.Flags().StringVar(&opts.ListenHost, "listen", "0.0.0.0", "address the gateway listens on")
	cmd.Flags().IntVar(&opts.BasePort, "base-port", 50051, "first gateway port; ports the plugins use on this host are skipped")
	cmd.Flags().StringVar(&opts.GatewayHost, "gateway-host", hostname, "host name Qlik uses to reach the gateway; the default is this machine's name")
	cmd.Flags().StringVar(&opts.TLSDir, "gateway-certs", "certs/gateway", "the gateway's certificate folder, as made by certs init")
	cmd.Flags().StringVar(&opts.QlikCertFolder, "qlik-certs", `C:\ProgramData\ssegw\qlik`, "where the Qlik server keeps the gateway's client folder (qlik/ from certs init)")
	return cmd
}

func importSettings(cmd *cobra.Command, path, out string, force bool, opts config.GatewayOptions) error {
	opts, err := checkGatewayOptions(opts)
	if err != nil {
		return err
	}

	if err := checkOutputIsNotSettings(path, out); err != nil {
		return err
	}

	// Read the analytic connections.
	data, err := readSettingsFile(path)
	if err != nil {
		return fmt.Errorf("reading Settings.ini: %w", err)
	}
	plugins, problems, err := config.ReadSSEPlugins(data)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	plugins, problems = rejectUnwritableEntries(plugins, problems)
	stderr := cmd.ErrOrStderr()
	for _, problem := range problems {
		if _, ok := errors.AsType[*config.IgnoredLineError](problem); ok {
			fmt.Fprintf(stderr, "warning: %v\n", problem)
			continue
		}
		fmt.Fprintf(stderr, "skipped %v\n", problem)
	}
	if len(plugins) == 0 {
		return fmt.Errorf("%s: no valid SSEPlugin entry to import", path)
	}

	// Write the gateway's configuration, never over an existing file
	// unless asked.
	opts.Skipped = nil
	for _, problem := range problems {
		if skipped, ok := errors.AsType[*config.EntryError](problem); ok {
			opts.Skipped = append(opts.Skipped, skipped.Entry)
		}
	}
	opts.LocalHosts = localHosts()
	cfg, line, err := config.GatewayForPlugins(plugins, opts)
	if err != nil {
		return err
	}
	if err := checkListenPorts(cfg, opts.BasePort); err != nil {
		return err
	}
	// Every check comes before the write, so that a failed import leaves
	// no configuration behind.
	line, kept, err := withSkippedEntries(line, plugins, problems)
	if err != nil {
		return err
	}
	var text bytes.Buffer
	writeImportedConfig(&text, cfg, path, plugins)
	err = writeConfigFile(out, text.Bytes(), force)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s already exists; choose another --out, or rerun with --force to overwrite it", out)
	}
	if err != nil {
		return fmt.Errorf("writing the configuration %s: %w", out, err)
	}

	// Tell the admin what to change on Qlik's side.
	stdout := cmd.OutOrStdout()
	fmt.Fprintf(stdout, "Wrote %s with %s (%s).\n", out, count(len(plugins), "engine"), strings.Join(engineNames(plugins), ", "))
	// The configuration reads a relative folder from its own folder.
	tlsDir := opts.TLSDir
	if !filepath.IsAbs(tlsDir) {
		tlsDir = filepath.Join(filepath.Dir(out), tlsDir)
	}
	if _, err := os.Stat(tlsDir); err != nil {
		// validate would stop at the missing folder first.
		if filepath.Base(tlsDir) == tlsutil.GatewayFolder {
			// In hosts mode Qlik connects by each engine's name, which
			// the certificate must list too.
			names := []string{opts.GatewayHost}
			if opts.Mode == "hosts" {
				for _, name := range cfg.EngineNames() {
					names = append(names, cfg.Engine(name).Hosts...)
				}
			}
			fmt.Fprintf(stdout, "Make the gateway's certificates first, since %s does not exist yet: ssegw certs init --out %s --hosts %s\n",
				tlsDir, shellquote.Quote(filepath.Dir(tlsDir)), shellquote.Quote(strings.Join(names, ",")))
		} else {
			fmt.Fprintf(stdout, "Put the gateway's certificates in %s first, which does not exist yet.\n", tlsDir)
		}
	}
	fmt.Fprintf(stdout, "Check it with: ssegw validate --config %s --connect\n\n", shellquote.Quote(out))
	fmt.Fprintf(stdout, "In Settings.ini, under [Settings 7], replace the SSEPlugin line with:\n%s\n", line)
	switch len(kept) {
	case 0:
	case 1:
		fmt.Fprintf(stdout, "\nThe skipped entry %s stays in it as it was, so Qlik keeps calling that plugin directly; fix the entry and import again to route it through the gateway.\n", kept[0])
	default:
		fmt.Fprintf(stdout, "\nThe skipped entries %s stay in it as they were, so Qlik keeps calling those plugins directly; fix the entries and import again to route them through the gateway.\n",
			strings.Join(kept, ", "))
	}
	if opts.Mode == "hosts" {
		fmt.Fprintf(stdout, "\nEach engine's host name must resolve to the gateway where Qlik runs, and be in the gateway's certificate:\n")
		for _, name := range cfg.EngineNames() {
			fmt.Fprintf(stdout, "  %s\n", cfg.Engine(name).Hosts[0])
		}
	}
	if len(kept) > 0 {
		return exitError{code: 1}
	}
	return nil
}

// checkGatewayOptions rejects flag values that would make a configuration
// or an SSEPlugin line that does not work, and returns opts with
// --gateway-host as it belongs in an address: an IPv6 address without
// brackets.
func checkGatewayOptions(opts config.GatewayOptions) (config.GatewayOptions, error) {
	if opts.Mode != "ports" && opts.Mode != "hosts" {
		return opts, fmt.Errorf("invalid --mode %q: use ports (a gateway port per engine) or hosts (one port, a host name per engine)", opts.Mode)
	}
	if opts.BasePort < 1 || opts.BasePort > 65535 {
		return opts, fmt.Errorf("invalid --base-port %d: give a port from 1 to 65535, such as 50051", opts.BasePort)
	}
	if host := opts.ListenHost; host != "" && host != "localhost" && net.ParseIP(host) == nil {
		return opts, fmt.Errorf("invalid --listen %q: give an IP address, such as 0.0.0.0 for every IPv4 interface, localhost, or an empty value for every interface", host)
	}
	if strings.TrimSpace(opts.GatewayHost) == "" {
		return opts, errors.New("--gateway-host is empty; give the host name or IP address by which Qlik reaches the gateway")
	}
	host, err := tlsutil.ParseHost(opts.GatewayHost)
	if err == nil && strings.Contains(host, "*") {
		err = errors.New("a wildcard, which Qlik cannot connect to")
	}
	if err != nil {
		return opts, fmt.Errorf("invalid --gateway-host %q: %w; give the host name or IP address by which Qlik reaches the gateway", opts.GatewayHost, err)
	}
	if strings.TrimSpace(opts.TLSDir) == "" {
		return opts, errors.New("--gateway-certs is empty; give the gateway's certificate folder, which every listener uses for TLS, such as certs/gateway from certs init")
	}
	if strings.TrimSpace(opts.QlikCertFolder) == "" {
		return opts, errors.New(`--qlik-certs is empty; give the folder on the Qlik server that contains the gateway's client certificates, such as C:\ProgramData\ssegw\qlik with qlik/ from certs init, because the gateway's listeners require TLS`)
	}
	if err := config.CheckQlikCertFolder(opts.QlikCertFolder); err != nil {
		return opts, fmt.Errorf("invalid --qlik-certs %q: %w", opts.QlikCertFolder, err)
	}
	if opts.Mode == "hosts" && net.ParseIP(host) != nil {
		return opts, fmt.Errorf("--mode hosts needs a --gateway-host that is a DNS name, for the engines' names <engine>.<gateway-host>, not the IP address %s", host)
	}
	opts.GatewayHost = host
	return opts, nil
}

// localHosts returns this machine's host name and interface addresses,
// by which a Settings.ini may name plugins on the host that the gateway
// will share with them. It reads them without a DNS lookup; what it
// cannot read is left out.
func localHosts() []string {
	var hosts []string
	if name, err := os.Hostname(); err == nil {
		hosts = append(hosts, name)
	}
	if addresses, err := net.InterfaceAddrs(); err == nil {
		for _, address := range addresses {
			if prefix, ok := address.(*net.IPNet); ok {
				hosts = append(hosts, prefix.IP.String())
			}
		}
	}
	return hosts
}

// checkOutputIsNotSettings returns an error when out is the Settings.ini
// file at path, by the same name, by another path to it, or through a
// link, since --force would then replace the file the import reads.
func checkOutputIsNotSettings(path, out string) error {
	settings, err := os.Stat(path)
	if err != nil {
		// readSettingsFile reports it.
		return nil
	}
	output, err := os.Stat(out)
	if err != nil || !os.SameFile(settings, output) {
		return nil
	}
	return fmt.Errorf("--out %s is the Settings.ini being imported, %s, which import-settings never changes; choose another --out, such as ssegw.yaml", out, path)
}

// maxSettingsFile is the max size in bytes of a Settings.ini that
// import-settings reads. QlikView's Settings.ini is a few kilobytes, so a
// larger file is most likely the wrong one.
const maxSettingsFile = 16 << 20

// readSettingsFile reads a Settings.ini. It rejects anything but a regular
// file, since a FIFO would block and a device such as /dev/zero never ends.
func readSettingsFile(path string) ([]byte, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file; give the path of the Settings.ini file", path)
	}
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	data, err := io.ReadAll(io.LimitReader(file, maxSettingsFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxSettingsFile {
		return nil, fmt.Errorf("%s has more than %d bytes, far more than a Settings.ini; check the path", path, maxSettingsFile)
	}
	return data, nil
}

// rejectUnwritableEntries moves to problems the entries with a field that
// the configuration file cannot contain as written. Such a field is not
// UTF-8 text, or it contains a control character, such as a carriage
// return, which would break the line of YAML.
func rejectUnwritableEntries(plugins []config.SSEPlugin, problems []error) ([]config.SSEPlugin, []error) {
	var writable []config.SSEPlugin
	for _, plugin := range plugins {
		if err := checkEntryText(plugin.Fields); err != nil {
			problems = append(problems, &config.EntryError{Position: plugin.Position, Entry: strings.Join(plugin.Fields, ","), Err: err})
			continue
		}
		writable = append(writable, plugin)
	}
	return writable, problems
}

// withSkippedEntries returns the gateway's SSEPlugin line with the entries
// that the import skipped put back in place, as they were, so that
// replacing Qlik's line loses no analytic connection. It also returns the
// positions of those entries. line has one entry per plugin, in the
// plugins' order. It returns an error when line has another number of
// entries, which a ';' inside a field would cause.
func withSkippedEntries(line string, plugins []config.SSEPlugin, problems []error) (string, []string, error) {
	type entry struct {
		position int
		text     string
		skipped  bool
	}
	texts := strings.Split(strings.TrimPrefix(line, "SSEPlugin="), ";")
	if len(texts) != len(plugins) {
		return "", nil, fmt.Errorf("internal error: the gateway's SSEPlugin line %q has %d entries for %d plugins", line, len(texts), len(plugins))
	}
	var entries []entry
	for i, text := range texts {
		entries = append(entries, entry{position: plugins[i].Position, text: text})
	}
	for _, problem := range problems {
		var skipped *config.EntryError
		if errors.As(problem, &skipped) {
			entries = append(entries, entry{position: skipped.Position, text: skipped.Entry, skipped: true})
		}
	}
	slices.SortStableFunc(entries, func(x, y entry) int { return x.position - y.position })
	var ordered, kept []string
	for _, e := range entries {
		ordered = append(ordered, e.text)
		if e.skipped {
			kept = append(kept, strconv.Itoa(e.position))
		}
	}
	return "SSEPlugin=" + strings.Join(ordered, ";"), kept, nil
}

func checkEntryText(fields []string) error {
	for _, field := range fields {
		if !utf8.ValidString(field) {
			return fmt.Errorf("field %q is not UTF-8 text; save Settings.ini as UTF-16, as QlikView does, or as UTF-8", field)
		}
		if i := strings.IndexFunc(field, needsYAMLEscape); i >= 0 {
			character, _ := utf8.DecodeRuneInString(field[i:])
			return fmt.Errorf("field %q contains %U, a control character or line break; remove it from Settings.ini", field, character)
		}
	}
	return nil
}

// checkListenPorts checks that every listener's port is at most 65535.
// With many engines, or a --base-port near the top, the ports counted up
// from base can exceed it.
func checkListenPorts(cfg *config.Config, base int) error {
	highest := 0
	for _, listener := range cfg.Listeners {
		_, portText, err := net.SplitHostPort(listener.Address)
		if err != nil {
			return fmt.Errorf("listener address %q: %w", listener.Address, err)
		}
		port, err := strconv.Atoi(portText)
		if err != nil {
			return fmt.Errorf("listener address %q: invalid port", listener.Address)
		}
		highest = max(highest, port)
	}
	if highest <= 65535 {
		return nil
	}
	return fmt.Errorf("--base-port %d leaves too few ports: the %s need ports up to %d, skipping the ports of plugins on this host, and the highest port is 65535; give a --base-port of at most %d",
		base, count(len(cfg.Listeners), "listener"), highest, base-(highest-65535))
}

func engineNames(plugins []config.SSEPlugin) []string {
	names := make([]string, len(plugins))
	for i, plugin := range plugins {
		names[i] = plugin.Name
	}
	return names
}

// writeImportedConfig writes cfg as commented YAML.
func writeImportedConfig(w io.Writer, cfg *config.Config, source string, plugins []config.SSEPlugin) {
	fmt.Fprintf(w, "# Imported by ssegw import-settings from %s on %s.\n", yamlComment(source), time.Now().Format(time.DateOnly))
	fmt.Fprintf(w, "# One engine per SSEPlugin entry; see config.yaml in ssegw's repository for every key.\n\n")
	fmt.Fprintln(w, "listeners:")
	for _, listener := range cfg.Listeners {
		fmt.Fprintf(w, "  - address: %s\n", yamlString(listener.Address))
		if listener.Engine != "" {
			fmt.Fprintf(w, "    engine: %s\n", yamlString(listener.Engine))
		}
		fmt.Fprintf(w, "    tls: { dir: %s }\n", yamlString(listener.TLS.Dir))
	}
	fmt.Fprintln(w, "\nengines:")
	for _, plugin := range plugins {
		engine := cfg.Engines[plugin.Name]
		// Quoted, so that an engine named yes or null stays a name in YAML.
		fmt.Fprintf(w, "  %s:   # entry %d: %s\n", yamlString(plugin.Name), plugin.Position, yamlComment(strings.Join(plugin.Fields, ",")))
		if len(engine.Hosts) > 0 {
			fmt.Fprintf(w, "    hosts: [%s]\n", yamlString(engine.Hosts[0]))
		}
		fmt.Fprintf(w, "    request_timeout: %v   # 0s: none, as in Qlik\n", durationText(engine.RequestTimeout))
		fmt.Fprintf(w, "    reconnect_buffer: %v  # Qlik's reconnect timeout\n", durationText(*engine.ReconnectBuffer))
		fmt.Fprintln(w, "    backends:")
		backend := engine.Backends[0]
		fmt.Fprintf(w, "      - address: %s\n", yamlString(backend.Address))
		if backend.TLS != nil {
			fmt.Fprintf(w, "        # Qlik's certificate folder for this plugin. If the plugin's certificate\n")
			fmt.Fprintf(w, "        # lists its IP address only as a DNS name, add server_name.\n")
			fmt.Fprintf(w, "        tls: { dir: %s }\n", yamlString(backend.TLS.Dir))
		}
	}
	fmt.Fprintln(w, "\nstate_dir: state")
}

// yamlString quotes text for YAML: with single quotes, in which the
// backslashes of Windows paths stay as they are, or with double quotes and
// escapes when text has a character that needsYAMLEscape reports. A byte
// that is not UTF-8, which YAML cannot contain, becomes U+FFFD.
func yamlString(text string) string {
	if utf8.ValidString(text) && !strings.ContainsFunc(text, needsYAMLEscape) {
		return "'" + strings.ReplaceAll(text, "'", "''") + "'"
	}
	var quoted strings.Builder
	quoted.WriteByte('"')
	for _, r := range text {
		switch {
		case r == '"' || r == '\\':
			quoted.WriteByte('\\')
			quoted.WriteRune(r)
		case !needsYAMLEscape(r):
			quoted.WriteRune(r)
		case r <= 0xff:
			fmt.Fprintf(&quoted, "\\x%02X", r)
		default:
			fmt.Fprintf(&quoted, "\\u%04X", r)
		}
	}
	quoted.WriteByte('"')
	return quoted.String()
}

// yamlComment returns text for a YAML comment, with bytes that are not
// UTF-8 and the characters that needsYAMLEscape reports written as Go
// escapes, such as \r, since a line break would end the comment.
func yamlComment(text string) string {
	if utf8.ValidString(text) && !strings.ContainsFunc(text, needsYAMLEscape) {
		return text
	}
	quoted := strconv.Quote(text)
	return quoted[1 : len(quoted)-1]
}

// needsYAMLEscape reports whether r cannot stay as written inside a quoted
// YAML scalar or a comment on one line. Such characters are the control
// characters, which include tab and the line breaks CR, LF and NEL, and
// the line and paragraph separators, which YAML 1.1 parsers take as line
// breaks. So are the byte order mark and the noncharacters U+FFFE and
// U+FFFF.
func needsYAMLEscape(r rune) bool {
	return unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || r == '\ufeff' || r == '\ufffe' || r == '\uffff'
}

func durationText(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	return d.String()
}
