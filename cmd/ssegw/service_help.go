package main

// The service command's help, shown on every system so that an admin can
// read it before copying the binary to the Windows server.
const (
	serviceLong = `Run the gateway as the Windows service "ssegw" (display name "ssegw SSE
gateway"), started automatically at boot and restarted by the service
manager after a failure: 5 seconds after the first one, 15 after the
second, 60 after every further one within a day.

The configuration is %ProgramData%\ssegw\config.yaml unless install is
given --config. Relative paths in it, such as state_dir: state, are
relative to its folder, so certificates and state stay next to it. The
gateway's log goes to the Application event log, source ssegw, or to the
file given with --log-file. A stop, from the service manager or at system
shutdown, drains calls in flight as SIGTERM does, within drain_timeout;
at shutdown Windows waits 60 seconds at most. The gateway reloads its
configuration when the file changes.

install, uninstall, start and stop need an elevated prompt.

install takes --config FILE, --log-file FILE, and --account NAME with
--password-stdin (or the less safe --password) for an account other than
LocalSystem.`

	serviceExample = `  ssegw service install
  ssegw service install --config D:\ssegw\config.yaml --log-file D:\ssegw\logs\ssegw.log
  ssegw service start
  ssegw service stop
  ssegw service uninstall`
)
