package deploy

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ssegw/ssegw/config"
)

const (
	unitPath     = "deploy/systemd/ssegw.service"
	sysusersPath = "deploy/systemd/ssegw.sysusers"

	// unitBinary is where the unit expects the ssegw binary.
	unitBinary = "/usr/local/bin/ssegw"

	// maxExposure is the highest overall exposure that systemd-analyze
	// security may report for the unit, in tenths of its 0 to 10 scale as
	// --threshold takes it: 20 is 2.0. The unit scored 1.4 with
	// systemd 252.
	maxExposure = "20"
)

// unitFile is a systemd unit file's settings: for each section, its
// assignments in file order. Keys may repeat, as SystemCallFilter= does.
type unitFile map[string][][2]string

// readUnit parses the gateway's unit file.
func readUnit(t *testing.T) unitFile {
	t.Helper()
	unit := unitFile{}
	section := ""
	scanner := bufio.NewScanner(bytes.NewReader(readFile(t, unitPath)))
	for line := 1; scanner.Scan(); line++ {
		text := strings.TrimSpace(scanner.Text())
		switch {
		case text == "", strings.HasPrefix(text, "#"), strings.HasPrefix(text, ";"):
		case strings.HasPrefix(text, "[") && strings.HasSuffix(text, "]"):
			section = strings.Trim(text, "[]")
		case strings.HasSuffix(text, `\`):
			t.Fatalf("%s:%d: continuation lines are not supported by this test", unitPath, line)
		default:
			key, value, ok := strings.Cut(text, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: %q is neither a section nor an assignment", unitPath, line, text)
			}
			unit[section] = append(unit[section], [2]string{strings.TrimSpace(key), strings.TrimSpace(value)})
		}
	}
	return unit
}

// values returns every value assigned to key in section, in file order.
func (u unitFile) values(section, key string) []string {
	var values []string
	for _, assignment := range u[section] {
		if assignment[0] == key {
			values = append(values, assignment[1])
		}
	}
	return values
}

// environment returns the variables of the Service section's
// Environment= lines, which hold one NAME=value each in this unit.
func (u unitFile) environment() map[string]string {
	environ := map[string]string{}
	for _, assignment := range u.values("Service", "Environment") {
		name, value, _ := strings.Cut(assignment, "=")
		environ[name] = value
	}
	return environ
}

// TestUnitSettings checks the settings the gateway depends on and the
// hardening the deployment guide promises. It needs no systemd.
func TestUnitSettings(t *testing.T) {
	unit := readUnit(t)

	// Each setting with the value it must have; a key that may repeat
	// must have the value among its assignments.
	required := []struct{ key, value string }{
		{"User", "ssegw"},
		{"Group", "ssegw"},
		{"ExecStart", unitBinary + " serve --config /etc/ssegw/config.yaml"},
		{"ExecReload", "/bin/kill -HUP $MAINPID"},
		{"KillSignal", "SIGTERM"},
		{"ConfigurationDirectory", "ssegw"},
		{"StateDirectory", "ssegw"},
		{"Environment", config.EnvPrefix + "STATE_DIR=/var/lib/ssegw"},
		{"NoNewPrivileges", "yes"},
		{"ProtectSystem", "strict"},
		{"ProtectHome", "yes"},
		{"PrivateTmp", "yes"},
		{"PrivateDevices", "yes"},
		{"CapabilityBoundingSet", ""},
		{"AmbientCapabilities", ""},
		{"RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"},
		{"SystemCallFilter", "@system-service"},
		{"MemoryDenyWriteExecute", "yes"},
	}
	for _, setting := range required {
		if got := unit.values("Service", setting.key); !slices.Contains(got, setting.value) {
			t.Errorf("[Service] %s = %q, want %q among them", setting.key, got, setting.value)
		}
	}

	// systemd sends SIGKILL when TimeoutStopSec runs out, which would cut
	// the drain short.
	stopTimeouts := unit.values("Service", "TimeoutStopSec")
	if len(stopTimeouts) != 1 {
		t.Fatalf("[Service] TimeoutStopSec = %q, want one value in seconds", stopTimeouts)
	}
	seconds, err := strconv.Atoi(stopTimeouts[0])
	if err != nil {
		t.Fatalf("[Service] TimeoutStopSec = %q, want a number of seconds", stopTimeouts[0])
	}
	if stop := time.Duration(seconds) * time.Second; stop <= config.DefaultDrainTimeout {
		t.Errorf("[Service] TimeoutStopSec = %v, want more than the default drain_timeout %v", stop, config.DefaultDrainTimeout)
	}
}

// TestSysusersCreatesUnitUser checks that the sysusers.d file creates the
// user and group the unit runs as.
func TestSysusersCreatesUnitUser(t *testing.T) {
	user := readUnit(t).values("Service", "User")
	if len(user) != 1 {
		t.Fatalf("[Service] User = %q, want one user", user)
	}

	// A line "u NAME ..." creates the user NAME and a group of that name.
	for _, line := range strings.Split(string(readFile(t, sysusersPath)), "\n") {
		fields := strings.Fields(line)
		if len(fields) >= 2 && fields[0] == "u" && fields[1] == user[0] {
			return
		}
	}
	t.Errorf("%s creates no user %q, which the unit runs as", sysusersPath, user[0])
}

// TestUnitVerifies runs systemd-analyze verify on the unit, with its
// binary path pointed at an executable file, since verify rejects a unit
// whose ExecStart= binary is missing.
func TestUnitVerifies(t *testing.T) {
	analyze := lookPathOrSkip(t, "systemd-analyze")
	unit := unitWithBinary(t)

	output, err := exec.Command(analyze, "verify", unit).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze verify %s: %v\n%s", unitPath, err, output)
	}
	// verify exits with 0 on some warnings, such as an unknown key.
	if len(bytes.TrimSpace(output)) > 0 {
		t.Errorf("systemd-analyze verify %s printed:\n%s", unitPath, output)
	}
}

// TestUnitExposure runs systemd-analyze security on the unit, which
// fails when the unit's overall exposure is above maxExposure: a removed
// hardening setting shows here.
func TestUnitExposure(t *testing.T) {
	analyze := lookPathOrSkip(t, "systemd-analyze")
	unit := unitWithBinary(t)

	output, err := exec.Command(analyze, "security", "--offline=yes", "--threshold="+maxExposure, "--no-pager", unit).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security --threshold=%s %s: %v\n%s", maxExposure, unitPath, err, output)
	}
	lines := strings.Split(strings.TrimSpace(string(output)), "\n")
	t.Log(lines[len(lines)-1])
}

// lookPathOrSkip returns the path of a program. When it is not
// installed, the test is skipped, but fails with CI set, since CI
// installs it and a skip there would hide that the unit went unchecked.
func lookPathOrSkip(t *testing.T, program string) string {
	t.Helper()
	path, err := exec.LookPath(program)
	if err != nil {
		message := fmt.Sprintf("%s not found, so the unit is not checked with it; install systemd (apt-get install systemd) to run this test", program)
		if os.Getenv("CI") != "" {
			t.Fatal(message)
		}
		t.Skip(message)
	}
	return path
}

// unitWithBinary writes a copy of the unit whose binary path names an
// executable file in a temporary folder, and returns the copy's path.
// The copy keeps the unit's file name, which systemd-analyze reads as the
// unit's name.
func unitWithBinary(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	binary := filepath.Join(dir, "ssegw")
	if err := os.WriteFile(binary, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	text := string(readFile(t, unitPath))
	if !strings.Contains(text, unitBinary+" ") {
		t.Fatalf("%s does not run %s", unitPath, unitBinary)
	}
	unit := filepath.Join(dir, filepath.Base(unitPath))
	if err := os.WriteFile(unit, []byte(strings.ReplaceAll(text, unitBinary+" ", binary+" ")), 0o644); err != nil {
		t.Fatal(err)
	}
	return unit
}
