package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"github.com/spf13/cobra"
	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/eventlog"
	"golang.org/x/sys/windows/svc/mgr"
)

const (
	serviceName        = "ssegw"
	serviceDisplayName = "ssegw SSE gateway"
	serviceDescription = "Forwards the Server-Side Extension (SSE) calls of Qlik engines to their SSE plugins."

	// eventSource is the service's source in the Application event log.
	eventSource = serviceName

	// eventID is the id of every record the service writes. Records of a
	// source registered with EventCreate.exe show their text only for ids
	// from 1 to 1000.
	eventID = 1

	// maxEventText is the longest text one event log record takes, in
	// bytes; ReportEvent rejects strings over 31,839 characters.
	maxEventText = 31000

	// stopProgressInterval is how often a stopping service reports to
	// the service manager that it is still draining, so that the manager
	// waits for the whole drain_timeout instead of giving up on the service.
	stopProgressInterval = 2 * time.Second

	// preshutdownTimeout is how long Windows waits for the service to
	// drain at system shutdown, above the default drain_timeout of 30s.
	// Windows' own default is 10s (since Windows 10 version 1703).
	preshutdownTimeout = 60 * time.Second
)

// Service-specific exit codes, which the service manager records. The
// recovery actions restart the service after any of them.
const (
	exitCodeFailed      = 1 // the gateway failed, such as a port in use
	exitCodeLogUnusable = 3 // neither the log file nor the event log opened
)

// recoveryActions restart the service after a failure, waiting longer
// after repeated ones; the count of failures resets after a day without one.
var recoveryActions = []mgr.RecoveryAction{
	{Type: mgr.ServiceRestart, Delay: 5 * time.Second},
	{Type: mgr.ServiceRestart, Delay: 15 * time.Second},
	{Type: mgr.ServiceRestart, Delay: 60 * time.Second},
}

const recoveryResetPeriod = uint32(24 * time.Hour / time.Second)

// newServiceCommand returns the service command, which installs ssegw as
// a Windows service and controls it.
func newServiceCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "service",
		Short:   "Install, start, stop or remove the Windows service",
		Long:    serviceLong,
		Example: serviceExample,
	}
	cmd.AddCommand(
		newServiceInstallCommand(),
		newServiceUninstallCommand(),
		newServiceStartCommand(),
		newServiceStopCommand(),
		newServiceRunCommand(),
	)
	return cmd
}

// serviceSettings is the part of the service's configuration that install
// writes into its command line, for service run to read.
type serviceSettings struct {
	configFile string
	logFile    string
}

// args returns the arguments of the service's command line.
func (s serviceSettings) args() []string {
	args := []string{"service", "run", "--config", s.configFile}
	if s.logFile != "" {
		args = append(args, "--log-file", s.logFile)
	}
	return args
}

func newServiceInstallCommand() *cobra.Command {
	var (
		settings      serviceSettings
		account       string
		password      string
		passwordStdin bool
	)
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Register the gateway as a Windows service that starts at boot",
		Long: `Register this ssegw.exe as the service "ssegw", which starts at boot and
runs the gateway with --config. Keep ssegw.exe where it is: the service
runs it from that path. The service runs as LocalSystem unless --account
names another account, such as "NT AUTHORITY\LocalService" or the
virtual account "NT SERVICE\ssegw"; that account then needs to read the
configuration and certificates and to write state_dir and --log-file.

An account with a password takes it from --password-stdin, the first line
of standard input, which a console does not show as it is typed. The
--password flag works too, but other users can read it in the list of
processes, and it stays in the shell's history.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if passwordStdin && cmd.Flags().Changed("password") {
				return errors.New("give the password with either --password or --password-stdin, not both")
			}
			if (passwordStdin || password != "") && account == "" {
				return errors.New("a password applies only with --account, because LocalSystem, the default account, has none")
			}
			if passwordStdin {
				var err error
				if password, err = readServicePassword(cmd); err != nil {
					return fmt.Errorf("--password-stdin: %w", err)
				}
			}
			return installService(cmd, settings, account, password)
		},
	}
	cmd.Flags().StringVarP(&settings.configFile, "config", "c", defaultServiceConfig(), "configuration file of the service")
	cmd.Flags().StringVar(&settings.logFile, "log-file", "", "file the service appends its log to; empty for the Application event log")
	cmd.Flags().StringVar(&account, "account", "", `account the service runs as, such as "NT SERVICE\ssegw"; empty for LocalSystem`)
	cmd.Flags().StringVar(&password, "password", "", "password of --account, which other users can read in the process list; prefer --password-stdin. Virtual and built-in service accounts have none")
	cmd.Flags().BoolVar(&passwordStdin, "password-stdin", false, "read the password of --account from the first line of standard input")
	return cmd
}

// readServicePassword reads the password from the first line of standard
// input. At a console it prints a prompt and turns off echo while it
// reads.
func readServicePassword(cmd *cobra.Command) (string, error) {
	in := cmd.InOrStdin()
	file, ok := in.(*os.File)
	if !ok || !isTerminal(file) {
		return readPasswordLine(in)
	}
	handle := windows.Handle(file.Fd())
	var mode uint32
	if err := windows.GetConsoleMode(handle, &mode); err != nil {
		return "", fmt.Errorf("reading the console mode: %w", err)
	}
	if err := windows.SetConsoleMode(handle, mode&^windows.ENABLE_ECHO_INPUT); err != nil {
		return "", fmt.Errorf("turning off the echo of the console: %w", err)
	}
	defer windows.SetConsoleMode(handle, mode)
	fmt.Fprint(cmd.ErrOrStderr(), "Password of the service account: ")
	defer fmt.Fprintln(cmd.ErrOrStderr()) // end the prompt's line, because the Enter key was not echoed
	return readPasswordLine(in)
}

func newServiceUninstallCommand() *cobra.Command {
	return newServiceActionCommand("uninstall", "Stop the Windows service and remove it",
		`Stop the service, draining calls in flight, and remove it and its event
log source. The configuration, certificates, state and log files stay.`,
		2*time.Minute, "how long to wait for the service to stop", uninstallService)
}

func newServiceStartCommand() *cobra.Command {
	return newServiceActionCommand("start", "Start the Windows service and wait until it runs", "",
		30*time.Second, "how long to wait for the service to run", startService)
}

func newServiceStopCommand() *cobra.Command {
	return newServiceActionCommand("stop", "Stop the Windows service after its calls in flight end", "",
		2*time.Minute, "how long to wait for the service to stop; keep it above drain_timeout", stopService)
}

// newServiceActionCommand returns a service command that runs action
// with the value of its --timeout flag.
func newServiceActionCommand(use, short, long string, timeout time.Duration, timeoutUsage string,
	action func(*cobra.Command, time.Duration) error) *cobra.Command {
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		Args:  cobra.NoArgs,
	}
	wait := cmd.Flags().Duration("timeout", timeout, timeoutUsage)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return action(cmd, *wait)
	}
	return cmd
}

// newServiceRunCommand returns the command line that the service manager
// starts; install writes it into the service's configuration.
func newServiceRunCommand() *cobra.Command {
	var settings serviceSettings
	cmd := &cobra.Command{
		Use:    "run",
		Short:  "Run the gateway under the Windows service manager",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			isService, err := svc.IsWindowsService()
			if err != nil {
				return fmt.Errorf("checking whether the service manager started ssegw: %w", err)
			}
			if !isService {
				return errors.New("service run is started by the Windows service manager; to run the gateway in a console, use ssegw serve --config FILE")
			}
			return svc.Run(serviceName, &gatewayService{settings: settings})
		},
	}
	cmd.Flags().StringVarP(&settings.configFile, "config", "c", defaultServiceConfig(), "configuration file")
	cmd.Flags().StringVar(&settings.logFile, "log-file", "", "file to append the log to; empty for the Application event log")
	return cmd
}

// defaultServiceConfig returns %ProgramData%\ssegw\config.yaml.
func defaultServiceConfig() string {
	programData, err := windows.KnownFolderPath(windows.FOLDERID_ProgramData, 0)
	if err != nil {
		programData = os.Getenv("ProgramData")
	}
	return filepath.Join(programData, "ssegw", "config.yaml")
}

// installService registers the service, its recovery actions and its
// event log source.
func installService(cmd *cobra.Command, settings serviceSettings, account, password string) error {
	out := cmd.OutOrStdout()

	// The service manager starts the service in System32, so every path
	// on its command line must be absolute.
	executable, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding the path of ssegw.exe: %w", err)
	}
	if settings.configFile, err = filepath.Abs(settings.configFile); err != nil {
		return fmt.Errorf("invalid --config %q: %w", settings.configFile, err)
	}
	if settings.logFile != "" {
		if settings.logFile, err = filepath.Abs(settings.logFile); err != nil {
			return fmt.Errorf("invalid --log-file %q: %w", settings.logFile, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(settings.configFile), 0o755); err != nil {
		return fmt.Errorf("creating the configuration folder: %w", err)
	}

	// Register the service.
	manager, err := connectServiceManager()
	if err != nil {
		return err
	}
	defer manager.Disconnect()
	service, err := manager.CreateService(serviceName, executable, mgr.Config{
		DisplayName:      serviceDisplayName,
		Description:      serviceDescription,
		StartType:        mgr.StartAutomatic,
		ErrorControl:     mgr.ErrorNormal,
		ServiceStartName: account,
		Password:         password,
	}, settings.args()...)
	if errors.Is(err, windows.ERROR_SERVICE_EXISTS) {
		return fmt.Errorf("service %s is already installed; to change it, run ssegw service uninstall, then install again", serviceName)
	}
	if err != nil {
		return fmt.Errorf("installing service %s: %w", serviceName, explainAccessDenied(err))
	}
	defer service.Close()

	// Restart after failures, including exits with an error code: a
	// gateway that failed to listen ends with one, without crashing. Give
	// the drain time at system shutdown.
	if err := configureRecovery(service); err != nil {
		service.Delete()
		return fmt.Errorf("configuring service %s, which was removed again: %w", serviceName, err)
	}

	// Register the event log source, replacing one left by an earlier
	// install. The service reports a log file it cannot open there too.
	eventlog.Remove(eventSource)
	if err := eventlog.InstallAsEventCreate(eventSource, eventlog.Error|eventlog.Warning|eventlog.Info); err != nil {
		service.Delete()
		return fmt.Errorf("registering event log source %s, and service %s was removed again: %w", eventSource, serviceName, explainAccessDenied(err))
	}

	fmt.Fprintf(out, "Installed service %s (%s), started at boot:\n  %s %s\n",
		serviceName, serviceDisplayName, executable, strings.Join(settings.args(), " "))
	if _, err := os.Stat(settings.configFile); err != nil {
		fmt.Fprintf(out, "The configuration file %s is missing: write it before you start the service.\n", settings.configFile)
	}
	if settings.logFile == "" {
		fmt.Fprintf(out, "The log goes to the Application event log, source %s.\n", eventSource)
	} else {
		fmt.Fprintf(out, "The log goes to %s.\n", settings.logFile)
	}
	fmt.Fprintln(out, "Start it with: ssegw service start")
	return nil
}

// configureRecovery sets the service's recovery actions and its
// preshutdown timeout.
func configureRecovery(service *mgr.Service) error {
	if err := service.SetRecoveryActions(recoveryActions, recoveryResetPeriod); err != nil {
		return fmt.Errorf("setting the recovery actions: %w", err)
	}
	if err := service.SetRecoveryActionsOnNonCrashFailures(true); err != nil {
		return fmt.Errorf("setting the recovery actions for exits with an error code: %w", err)
	}
	// SERVICE_PRESHUTDOWN_INFO holds only this timeout, in milliseconds.
	timeout := uint32(preshutdownTimeout / time.Millisecond)
	if err := windows.ChangeServiceConfig2(service.Handle, windows.SERVICE_CONFIG_PRESHUTDOWN_INFO, (*byte)(unsafe.Pointer(&timeout))); err != nil {
		return fmt.Errorf("setting the preshutdown timeout: %w", err)
	}
	return nil
}

// uninstallService stops the service and removes it and its event log
// source.
func uninstallService(cmd *cobra.Command, timeout time.Duration) error {
	return withService(func(service *mgr.Service) error {
		// Stop it first: a running service is only marked for deletion, and
		// a new install would fail until it stops.
		if err := stopAndWait(service, timeout); err != nil {
			return err
		}
		if err := service.Delete(); err != nil {
			return fmt.Errorf("removing service %s: %w", serviceName, explainAccessDenied(err))
		}
		if err := eventlog.Remove(eventSource); err != nil && !errors.Is(err, windows.ERROR_FILE_NOT_FOUND) {
			return fmt.Errorf("service %s removed, but not its event log source: %w", serviceName, err)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "Removed service %s. Its configuration, state and logs stay where they are.\n", serviceName)
		return nil
	})
}

// startService starts the service and waits until the service manager
// reports it running.
func startService(cmd *cobra.Command, timeout time.Duration) error {
	return withService(func(service *mgr.Service) error {
		if err := service.Start(); err != nil {
			return fmt.Errorf("starting service %s: %w", serviceName, explainAccessDenied(err))
		}
		status, err := waitForState(service, timeout, svc.Running, svc.Stopped)
		if err != nil {
			return err
		}
		if status.State == svc.Stopped {
			return fmt.Errorf("service %s failed to start (exit code %d); see its log: the Application event log, source %s, or the service's --log-file",
				serviceName, status.ServiceSpecificExitCode, eventSource)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "Service %s is running. /readyz on the admin address reports when it accepts calls.\n", serviceName)
		return nil
	})
}

// stopService stops the service and waits until it has drained.
func stopService(cmd *cobra.Command, timeout time.Duration) error {
	return withService(func(service *mgr.Service) error {
		if err := stopAndWait(service, timeout); err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "Service %s is stopped.\n", serviceName)
		return nil
	})
}

// stopAndWait sends a stop request to a running service and waits until
// it has stopped. A stopped service is left alone.
func stopAndWait(service *mgr.Service, timeout time.Duration) error {
	status, err := service.Query()
	if err != nil {
		return fmt.Errorf("querying service %s: %w", serviceName, err)
	}
	if status.State == svc.Stopped {
		return nil
	}
	if status.State != svc.StopPending {
		if _, err := service.Control(svc.Stop); err != nil {
			return fmt.Errorf("stopping service %s: %w", serviceName, explainAccessDenied(err))
		}
	}
	_, err = waitForState(service, timeout, svc.Stopped)
	return err
}

// waitForState polls the service until it reaches one of states, and
// returns the status it then has.
func waitForState(service *mgr.Service, timeout time.Duration, states ...svc.State) (svc.Status, error) {
	deadline := time.Now().Add(timeout)
	for {
		status, err := service.Query()
		if err != nil {
			return status, fmt.Errorf("querying service %s: %w", serviceName, err)
		}
		for _, state := range states {
			if status.State == state {
				return status, nil
			}
		}
		if time.Now().After(deadline) {
			return status, fmt.Errorf("service %s is still in state %d after %v; check again with sc query %s", serviceName, status.State, timeout, serviceName)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// connectServiceManager connects to the local service manager.
func connectServiceManager() (*mgr.Mgr, error) {
	manager, err := mgr.Connect()
	if err != nil {
		return nil, fmt.Errorf("connecting to the Windows service manager: %w", explainAccessDenied(err))
	}
	return manager, nil
}

// withService connects to the service manager, opens the service and
// runs use on it.
func withService(use func(service *mgr.Service) error) error {
	manager, err := connectServiceManager()
	if err != nil {
		return err
	}
	defer manager.Disconnect()
	service, err := openService(manager)
	if err != nil {
		return err
	}
	defer service.Close()
	return use(service)
}

// openService opens the installed ssegw service.
func openService(manager *mgr.Mgr) (*mgr.Service, error) {
	service, err := manager.OpenService(serviceName)
	if errors.Is(err, windows.ERROR_SERVICE_DOES_NOT_EXIST) {
		return nil, fmt.Errorf("service %s is not installed; install it with ssegw service install", serviceName)
	}
	if err != nil {
		return nil, fmt.Errorf("opening service %s: %w", serviceName, explainAccessDenied(err))
	}
	return service, nil
}

// explainAccessDenied adds the likely cause to an access-denied error.
func explainAccessDenied(err error) error {
	if errors.Is(err, windows.ERROR_ACCESS_DENIED) {
		return fmt.Errorf("%w (run the command from an elevated prompt: Run as administrator)", err)
	}
	return err
}

// gatewayService is the handler the service manager drives: it runs the
// gateway until a stop or shutdown request, then drains it.
type gatewayService struct {
	settings serviceSettings
}

// Execute runs the gateway and reports its state to the service manager.
// It returns a service-specific exit code when the gateway ended by
// itself, so that the recovery actions restart the service.
func (s *gatewayService) Execute(_ []string, requests <-chan svc.ChangeRequest, status chan<- svc.Status) (bool, uint32) {
	status <- svc.Status{State: svc.StartPending}

	// Open the log before anything else, since every later failure goes
	// there.
	logWriter, closeLog, err := openServiceLog(s.settings.logFile)
	if err != nil {
		reportToEventLog(eventlog.Error, fmt.Sprintf("ssegw: the service's log is unusable, nothing started: %v", err))
		return true, exitCodeLogUnusable
	}
	defer closeLog()

	// Run the gateway. The service manager counts it as running from
	// here; /readyz reports when its listeners and plugins are up.
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	ended := make(chan error, 1)
	go func() { ended <- runGateway(ctx, s.settings.configFile, logWriter) }()
	status <- svc.Status{State: svc.Running, Accepts: svc.AcceptStop | svc.AcceptShutdown | svc.AcceptPreShutdown}

	// Wait for a stop request, or for the gateway to fail.
	for {
		select {
		case err := <-ended:
			return gatewayExit(logWriter, err)
		case request := <-requests:
			switch request.Cmd {
			case svc.Interrogate:
				status <- request.CurrentStatus
			case svc.Stop, svc.PreShutdown, svc.Shutdown:
				stop()
				return drainService(ended, requests, status, logWriter)
			}
		}
	}
}

// drainService waits for the gateway to end after a stop request, and
// reports StopPending with a new checkpoint every stopProgressInterval.
func drainService(ended <-chan error, requests <-chan svc.ChangeRequest, status chan<- svc.Status, logWriter io.Writer) (bool, uint32) {
	// NOTE: at system shutdown Windows ends the service after
	// preshutdownTimeout, even when drain_timeout is longer.
	pending := svc.Status{State: svc.StopPending, CheckPoint: 1, WaitHint: uint32(2 * stopProgressInterval / time.Millisecond)}
	status <- pending
	progress := time.NewTicker(stopProgressInterval)
	defer progress.Stop()
	for {
		select {
		case err := <-ended:
			if err != nil {
				return gatewayExit(logWriter, err)
			}
			return false, 0
		case <-progress.C:
			pending.CheckPoint++
			status <- pending
		case request := <-requests:
			if request.Cmd == svc.Interrogate {
				status <- request.CurrentStatus
			}
		}
	}
}

// gatewayExit logs why the gateway ended by itself and returns the exit
// code the service reports for it.
func gatewayExit(logWriter io.Writer, err error) (bool, uint32) {
	var exit exitError
	switch {
	case errors.As(err, &exit):
		// runGateway has written its own message, such as each problem of
		// an invalid configuration, which ends with exit code 2 as in serve.
		return true, uint32(exit.code)
	case err != nil:
		fmt.Fprintf(logWriter, "ssegw: the gateway stopped: %v\n", err)
	default:
		fmt.Fprintln(logWriter, "ssegw: the gateway stopped without a stop request")
	}
	return true, exitCodeFailed
}

// openServiceLog opens the log file, or the event log when logFile is
// empty, and returns a writer for the gateway's log records.
func openServiceLog(logFile string) (io.Writer, func(), error) {
	if logFile == "" {
		log, err := eventlog.Open(eventSource)
		if err != nil {
			return nil, nil, fmt.Errorf("opening event log source %s: %w", eventSource, err)
		}
		return eventLogWriter{log: log}, func() { log.Close() }, nil
	}

	// The log file is never rotated and grows without bound: rotate it by
	// hand (stop, rename, start), or use the event log, which Windows caps.
	if err := os.MkdirAll(filepath.Dir(logFile), 0o755); err != nil {
		return nil, nil, fmt.Errorf("creating the folder of log file %s: %w", logFile, err)
	}
	file, err := os.OpenFile(logFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, nil, fmt.Errorf("opening log file %s: %w", logFile, err)
	}
	return file, func() { file.Close() }, nil
}

// reportToEventLog writes one record to the event log, for failures that
// happen before the service's own log is open. A failure to write is
// dropped, since there is nowhere left to report it.
func reportToEventLog(eventType uint32, text string) {
	log, err := eventlog.Open(eventSource)
	if err != nil {
		return
	}
	defer log.Close()
	eventLogWriter{log: log}.writeRecord(eventType, text)
}

// eventLogWriter writes each log record it receives as one event log
// record. slog's handlers write each record in one Write call, so a
// record is never split.
type eventLogWriter struct {
	log *eventlog.Log
}

func (w eventLogWriter) Write(record []byte) (int, error) {
	text := strings.TrimRight(string(record), "\r\n")
	if err := w.writeRecord(eventTypeOf(text), text); err != nil {
		return 0, err
	}
	return len(record), nil
}

// writeRecord writes text as one record of the given type, shortened to
// what the event log accepts.
func (w eventLogWriter) writeRecord(eventType uint32, text string) error {
	if len(text) > maxEventText {
		text = strings.ToValidUTF8(text[:maxEventText], "") + " [shortened]"
	}
	switch eventType {
	case eventlog.Error:
		return w.log.Error(eventID, text)
	case eventlog.Warning:
		return w.log.Warning(eventID, text)
	default:
		return w.log.Info(eventID, text)
	}
}

// eventTypeOf returns the event log type for one record of the gateway's
// log, from its level in the text format (level=WARN) or the JSON format
// ("level":"WARN"); the level comes before the message in both. Text
// without a level comes from runGateway before its logger exists, such as
// the problems of an invalid configuration, so it is an error.
func eventTypeOf(text string) uint32 {
	level, found := "", false
	for _, key := range []string{"level=", `"level":"`} {
		if i := strings.Index(text, key); i >= 0 {
			level, found = text[i+len(key):], true
			break
		}
	}
	switch {
	case !found, strings.HasPrefix(level, "ERROR"):
		return eventlog.Error
	case strings.HasPrefix(level, "WARN"):
		return eventlog.Warning
	default:
		return eventlog.Info
	}
}

var _ svc.Handler = (*gatewayService)(nil)
var _ io.Writer = eventLogWriter{}
