package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ssegw/ssegw/config"
)

func newImportSettingsCommand() *cobra.Command {
	opts := config.GatewayOptions{}
	var out string
	var force bool
	cmd := &cobra.Command{
		Use:   "import-settings PATH",
		Short: "Write a gateway configuration from a QlikView Settings.ini",
		Long: `Read the SSEPlugin= line under [Settings 7] of a QlikView Settings.ini
(UTF-8 or UTF-16, as QlikView writes it) and write a gateway configuration
with one engine per analytic connection: its address, its certificate
folder as the backend's TLS folder, its request timeout, and its reconnect
timeout as the engine's reconnect_buffer. Then print the SSEPlugin= line
that points Qlik at the gateway instead, with the gateway's client
certificate folder for Qlik.

--mode ports gives each engine its own gateway port; --mode hosts gives
all engines one port, and each a host name <engine>.<gateway-host> that
must resolve to the gateway.

Malformed entries are reported with their position, and the others are
still imported. The Settings.ini itself is never changed.`,
		Args: cobra.ExactArgs(1),
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
	cmd.Flags().StringVar(&opts.GatewayHost, "gateway-host", hostname, "host name Qlik uses to reach the gateway")
	cmd.Flags().StringVar(&opts.TLSDir, "gateway-certs", "certs/gateway", "the gateway's certificate folder, as made by certs init")
	cmd.Flags().StringVar(&opts.QlikCertFolder, "qlik-certs", `C:\ProgramData\ssegw\qlik`, "where the Qlik server keeps the gateway's client folder (qlik/ from certs init)")
	return cmd
}

func importSettings(cmd *cobra.Command, path, out string, force bool, opts config.GatewayOptions) error {
	// Read the analytic connections.
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading Settings.ini: %w", err)
	}
	plugins, problems, err := config.ReadSSEPlugins(data)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	stderr := cmd.ErrOrStderr()
	for _, problem := range problems {
		fmt.Fprintf(stderr, "skipped %v\n", problem)
	}
	if len(plugins) == 0 {
		return fmt.Errorf("%s: no valid SSEPlugin entry to import", path)
	}

	// Write the gateway's configuration, never over an existing file
	// unless asked.
	cfg, line, err := config.GatewayForPlugins(plugins, opts)
	if err != nil {
		return err
	}
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	file, err := os.OpenFile(out, flags, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s already exists; choose another --out, or rerun with --force to overwrite it", out)
	}
	if err != nil {
		return fmt.Errorf("writing the configuration: %w", err)
	}
	writeImportedConfig(file, cfg, path, plugins)
	if err := file.Close(); err != nil {
		return fmt.Errorf("writing the configuration: %w", err)
	}

	// Tell the admin what to change on Qlik's side.
	stdout := cmd.OutOrStdout()
	fmt.Fprintf(stdout, "Wrote %s with %d engines (%s).\n", out, len(plugins), strings.Join(engineNames(plugins), ", "))
	fmt.Fprintf(stdout, "Check it with: ssegw validate --config %s --connect\n\n", out)
	fmt.Fprintf(stdout, "In Settings.ini, under [Settings 7], replace the SSEPlugin line with:\n%s\n", line)
	if opts.Mode == "hosts" {
		fmt.Fprintf(stdout, "\nEach engine's host name must resolve to the gateway where Qlik runs, and be in the gateway's certificate:\n")
		for _, name := range cfg.EngineNames() {
			fmt.Fprintf(stdout, "  %s\n", cfg.Engine(name).Hosts[0])
		}
	}
	return nil
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
	fmt.Fprintf(w, "# Imported by ssegw import-settings from %s on %s.\n", source, time.Now().Format(time.DateOnly))
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
		fmt.Fprintf(w, "  %s:   # entry %d: %s\n", yamlString(plugin.Name), plugin.Position, strings.Join(plugin.Fields, ","))
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

// yamlString quotes text for YAML with single quotes, in which backslashes
// of Windows paths stay as they are.
func yamlString(text string) string {
	return "'" + strings.ReplaceAll(text, "'", "''") + "'"
}

func durationText(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	return d.String()
}
