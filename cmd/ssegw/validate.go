package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/internal/shellquote"
	"github.com/ssegw/ssegw/routing"
	"github.com/ssegw/ssegw/ssepb"
	"github.com/ssegw/ssegw/telemetry"
	"github.com/ssegw/ssegw/tlsutil"
)

func newValidateCommand() *cobra.Command {
	var configFile string
	var connect bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "validate --config FILE",
		Short: "Check a configuration file, and with --connect its plugins",
		Long: `Load a configuration file as serve would, with the SSEGW_ environment
variables, and print every problem in it at once, one per line naming the
key. The OpenTelemetry variables that serve reads are checked too: the
exporters with their OTLP protocols and endpoints, the sampler, the
metric export interval and timeout, OTEL_RESOURCE_ATTRIBUTES, the
Prometheus exporter's producers, host and port, and OTEL_BSP_* when
traces are exported. With --connect, also dial each backend with its
TLS settings, fetch its capabilities, and report replicas that cannot be
reached or whose functions differ from the other replicas of their
engine.

It warns about certificates that have expired: the file is valid with
them, but every peer refuses them. It also warns about engine host names
that the certificate of no TLS listener lists, since Qlik's calls by
those names fail the handshake. The exit status is 0 when the file and
the OpenTelemetry variables are valid and, with --connect, every backend
answered and agrees; 1 otherwise.`,
		Args: rejectConfigArgument,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if timeout <= 0 {
				return fmt.Errorf("invalid --timeout %v: give a positive duration, such as 5s", timeout)
			}
			out := cmd.OutOrStdout()
			if !cmd.Flags().Changed("config") {
				if _, err := os.Stat(configFile); errors.Is(err, fs.ErrNotExist) {
					fmt.Fprintln(out, missingDefaultConfig(configFile))
					return exitError{code: 1}
				}
			}
			cfg, err := config.Load(configFile, os.Environ())
			if err != nil {
				fmt.Fprintln(out, err)
				return exitError{code: 1}
			}
			// Problems of the environment do not stop the other checks, so
			// that one run lists them all.
			envErr := telemetry.CheckEnvironment(cfg)
			if envErr != nil {
				fmt.Fprintf(out, "%s: the file is valid, but serve would not start with this environment:\n%v\n", configFile, envErr)
			} else {
				fmt.Fprintf(out, "%s: valid: %s, %s (%s)\n", configFile, count(len(cfg.Listeners), "listener"), count(len(cfg.Engines), "engine"), strings.Join(cfg.EngineNames(), ", "))
			}
			for _, unusable := range cfg.UnusableCertificates(time.Now()) {
				advice := "every peer refuses it; renew it (ssegw certs init --force keeps the CA of a set it made)"
				if tlsutil.IsNotYetValidWarning(unusable) {
					advice = "every peer refuses it until then; check this machine's clock, or wait"
				}
				fmt.Fprintf(out, "warning: %s: %s\n", unusable, advice)
			}
			for _, warning := range append(cfg.UncoveredHosts(), cfg.UnroutedEngines()...) {
				fmt.Fprintf(out, "warning: %s\n", warning)
			}
			if connect && !checkBackends(cmd.Context(), out, cfg, timeout) {
				return exitError{code: 1}
			}
			if envErr != nil {
				return exitError{code: 1}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&configFile, "config", "c", "config.yaml", "configuration file")
	cmd.Flags().BoolVar(&connect, "connect", false, "also dial every backend and compare its capabilities with its engine's other replicas")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "limit for each backend's GetCapabilities")
	return cmd
}

// rejectConfigArgument rejects arguments, as cobra.NoArgs does, but
// first hints at --config when the argument looks like the configuration
// file: a regular file, or a name ending in .yaml or .yml.
func rejectConfigArgument(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	extension := strings.ToLower(filepath.Ext(args[0]))
	info, err := os.Stat(args[0])
	if extension == ".yaml" || extension == ".yml" || err == nil && info.Mode().IsRegular() {
		return fmt.Errorf("unexpected argument %q: %s takes the configuration file with --config, as in ssegw %s --config %s",
			args[0], cmd.Name(), cmd.Name(), shellquote.Quote(args[0]))
	}
	return cobra.NoArgs(cmd, args)
}

// missingDefaultConfig returns the message for a --config left at its
// default, name, when no such file exists in the working directory.
func missingDefaultConfig(name string) string {
	dir, err := os.Getwd()
	if err != nil {
		dir = "."
	}
	return fmt.Sprintf("reading config: %s does not exist in the working directory, %s; %s there is the default configuration file, and --config FILE names another",
		name, dir, name)
}

// duplicateFunctionIDs describes each function id that capabilities list
// more than once, with the names listed for it, in order of id.
func duplicateFunctionIDs(capabilities *ssepb.Capabilities) []string {
	names := map[int32][]string{}
	for _, function := range capabilities.GetFunctions() {
		names[function.GetFunctionId()] = append(names[function.GetFunctionId()], function.GetName())
	}
	var duplicates []string
	for _, id := range slices.Sorted(maps.Keys(names)) {
		if len(names[id]) > 1 {
			duplicates = append(duplicates, fmt.Sprintf("%d (%s)", id, strings.Join(names[id], ", ")))
		}
	}
	return duplicates
}

// backendHint returns what to check for a backend that did not answer,
// or "" when the error says it already.
func backendHint(backend config.Backend, err error) string {
	// Unix and Windows word a refused connection so (Go 1.26).
	if text := err.Error(); strings.Contains(text, "connection refused") || strings.Contains(text, "actively refused") {
		return "Nothing listens at this address: check that the plugin runs, and on this host and port."
	}
	return backendTLSHint(backend, err)
}

// backendTLSHint returns what to change for a backend whose TLS handshake
// failed on the plugin's certificate, or "" for other failures.
func backendTLSHint(backend config.Backend, err error) string {
	if backend.TLS == nil {
		return ""
	}
	switch tlsutil.DialFailureReason(err) {
	case tlsutil.DialServerUnknownAuthority:
		return "The plugin's certificate is not signed by the CA of the backend's tls section (root_cert.pem or ca_file)."
	case tlsutil.DialServerName:
		if backend.TLS.ServerName != "" {
			return fmt.Sprintf("The plugin's certificate does not list tls.server_name %s; change it to a name the certificate lists (ssegw certs check on the plugin's folder shows them). %s", backend.TLS.ServerName, nameBeforeCA)
		}
		return "The plugin's certificate does not list the host of the backend's address; set the backend's tls.server_name to a name it lists (ssegw certs check on the plugin's folder shows them). " + nameBeforeCA
	case tlsutil.DialClientRejected:
		return "The plugin rejected the gateway's client certificate: its CA is not one the plugin trusts, or it lacks the clientAuth usage. Check it with ssegw certs check on the backend's tls folder."
	case tlsutil.DialClosed:
		return "The connection closed during the handshake: the plugin may have rejected the gateway's client certificate (check it with ssegw certs check on the backend's tls folder), or what answers at this address is not a TLS plugin."
	case tlsutil.DialServerExpired:
		return "The plugin's certificate, or one of its chain, has expired or is not valid yet by this machine's clock; check its dates with ssegw certs check on the plugin's folder."
	case tlsutil.DialClientExpired:
		return "The plugin rejected the gateway's client certificate as expired or not valid yet; check its dates with ssegw certs check on the backend's tls folder, and renew it."
	}
	return ""
}

// checkBackends calls each backend's GetCapabilities and prints what each
// engine's replicas answered. It reports whether all answered and agree.
func checkBackends(ctx context.Context, out io.Writer, cfg *config.Config, timeout time.Duration) bool {
	if ctx == nil {
		ctx = context.Background()
	}
	ok := true
	answered := map[string]*routing.Capabilities{} // by engine, the capabilities of its first replica that responded
	for _, name := range cfg.EngineNames() {
		engine := cfg.Engine(name)
		if len(engine.Merge) > 0 {
			fmt.Fprintf(out, "engine %s merges %s\n", engine.Name, strings.Join(engine.Merge, ", "))
			continue
		}
		fmt.Fprintf(out, "engine %s\n", engine.Name)
		var first *routing.Capabilities
		var firstAddress string
		for _, backend := range replicaBackends(ctx, out, engine.Backends, &ok) {
			capabilities, err := fetchCapabilities(ctx, backend, timeout)
			if err != nil {
				ok = false
				fmt.Fprintf(out, "  %s: FAILED: %v\n", backend.Address, err)
				if hint := backendHint(backend, err); hint != "" {
					fmt.Fprintf(out, "    %s\n", hint)
				}
				continue
			}
			message := capabilities.Message
			plugin := strings.TrimSpace(message.GetPluginIdentifier() + " " + message.GetPluginVersion())
			if plugin == "" {
				plugin = "a plugin without identifier"
			}
			fmt.Fprintf(out, "  %s: ok: %s, %d functions, scripts %v\n", backend.Address,
				plugin, len(message.GetFunctions()), message.GetAllowScript())
			if duplicates := duplicateFunctionIDs(message); len(duplicates) > 0 {
				// Qlik calls a function by its id, so one of them could
				// never be called, or the other called by mistake.
				ok = false
				fmt.Fprintf(out, "    ERROR: function ids listed more than once: %s\n", strings.Join(duplicates, "; "))
			}
			switch {
			case first == nil:
				first, firstAddress = capabilities, backend.Address
				answered[strings.ToLower(engine.Name)] = capabilities
			case !first.SameFunctions(capabilities):
				ok = false
				var differences []string
				if ids := first.DifferingFunctions(capabilities); len(ids) > 0 {
					differences = append(differences, fmt.Sprintf("at function ids %v", ids))
				}
				if scripts, firstScripts := capabilities.Message.GetAllowScript(), first.Message.GetAllowScript(); scripts != firstScripts {
					differences = append(differences, fmt.Sprintf("on allowScript (%v here, %v there)", scripts, firstScripts))
				}
				fmt.Fprintf(out, "  %s: DISAGREES with %s %s; the gateway sends calls to the functions most replicas agree on\n",
					backend.Address, firstAddress, strings.Join(differences, " and "))
			}
		}
	}
	warnLeftOut(out, cfg, answered)
	return ok
}

// warnLeftOut prints, for each merged engine, the functions of its
// members that the gateway leaves out of its list because their ids do
// not fit a member's range of ids, as a replica of each returned them.
func warnLeftOut(out io.Writer, cfg *config.Config, answered map[string]*routing.Capabilities) {
	for _, name := range cfg.EngineNames() {
		engine := cfg.Engine(name)
		var left []string
		for _, name := range engine.Merge {
			// Named as the engine's own section names it, as the gateway does.
			member := cfg.Engine(name).Name
			capabilities := answered[strings.ToLower(member)]
			if capabilities == nil {
				continue
			}
			// Every member's own ids must fit the range that the first
			// member keeps as it is.
			first, last := routing.MemberIDs(0)
			for _, function := range capabilities.Message.GetFunctions() {
				if function.GetFunctionId() < first || function.GetFunctionId() > last {
					left = append(left, fmt.Sprintf("%s: %s (%d)", member, function.GetName(), function.GetFunctionId()))
				}
			}
		}
		if len(left) > 0 {
			fmt.Fprintf(out, "engine %s: WARNING: leaves out %s, since a member's function ids must be from 0 to 999 to be merged\n", engine.Name, strings.Join(left, ", "))
		}
	}
}

// replicaBackends returns the backends with each dns: true backend
// replaced by one backend per address its name resolves to, as the gateway
// makes them, so that every replica is checked. A name that does not
// resolve is reported, and sets ok to false.
func replicaBackends(ctx context.Context, out io.Writer, backends []config.Backend, ok *bool) []config.Backend {
	var replicas []config.Backend
	for _, backend := range backends {
		if !backend.DNS {
			replicas = append(replicas, backend)
			continue
		}
		addresses, err := routing.ResolveBackend(ctx, backend.Address)
		if err != nil {
			*ok = false
			fmt.Fprintf(out, "  %s: FAILED: resolving the name of a dns backend: %v\n", backend.Address, err)
			continue
		}
		kept := routing.BoundReplicas(addresses)
		if len(kept) < len(addresses) {
			fmt.Fprintf(out, "  %s: WARNING: resolves to %d addresses; the gateway makes replicas of the first %d in sorted order and leaves out the rest\n", backend.Address, len(addresses), len(kept))
		}
		for _, address := range kept {
			replica := backend
			replica.Address, replica.DNS = address, false
			if backend.TLS != nil {
				// The certificate names the host, not each address.
				tls := *backend.TLS
				tls.ServerName = backend.ServerName()
				replica.TLS = &tls
			}
			replicas = append(replicas, replica)
		}
	}
	return replicas
}

// fetchCapabilities calls a backend's GetCapabilities with its TLS
// settings.
func fetchCapabilities(ctx context.Context, backend config.Backend, timeout time.Duration) (*routing.Capabilities, error) {
	creds := insecure.NewCredentials()
	serverName := ""
	if backend.TLS != nil {
		serverName = backend.ServerName()
		tlsConfig, err := backend.TLS.Files().ClientConfig(serverName)
		if err != nil {
			return nil, err
		}
		creds = credentials.NewTLS(tlsConfig)
	}
	options := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if serverName != "" {
		options = append(options, grpc.WithAuthority(serverName))
	}
	conn, err := grpc.NewClient("passthrough:///"+backend.Address, options...)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// Without WaitForReady, a refused connection or a failed handshake
	// ends the call at once with its reason, rather than at the timeout.
	sent := time.Now()
	message, err := ssepb.NewConnectorClient(conn).GetCapabilities(ctx, &ssepb.Empty{})
	// The plugin's gRPC may end the call at the deadline it was sent, with
	// a reset, just before this command's own context ends. A plugin that
	// fails with DeadlineExceeded long before has a timeout of its own.
	lateReset := status.Code(err) == codes.DeadlineExceeded && time.Since(sent) >= timeout-min(timeout/10, 250*time.Millisecond)
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || lateReset {
		// grpc-go (v1.85) reports Ready only after the TLS handshake and
		// the server's HTTP/2 settings frame, so the plugin was up and the
		// call was sent.
		if conn.GetState() == connectivity.Ready {
			return nil, fmt.Errorf("connected, but the plugin did not respond to GetCapabilities within --timeout %v (%v); it may be busy or still starting, so check it again with a larger --timeout", timeout, err)
		}
		return nil, fmt.Errorf("no answer within %v: check the address and, for TLS, the folder and server_name (%v)", timeout, err)
	}
	if status.Code(err) == codes.Unavailable {
		return nil, fmt.Errorf("cannot connect: %s", status.Convert(err).Message())
	}
	if err != nil {
		return nil, err
	}
	return routing.NewCapabilities(message, time.Now()), nil
}
