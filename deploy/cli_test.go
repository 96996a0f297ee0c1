package deploy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
)

const (
	initCertsPath = "deploy/compose/init-certs.sh"

	// programName is the ssegw program's file name in every deployment.
	programName = "ssegw"

	// baseImage is the image name of ssegw's containers in the
	// Kubernetes base, before an overlay renames it.
	baseImage = "ssegw"
)

// commandLine is one run of ssegw that a deployment file sets up.
type commandLine struct {
	source string   // the file and the part of it, for messages
	args   []string // after the program's name
}

// dockerImage is the ENTRYPOINT and CMD of one Dockerfile stage, in the
// JSON form.
type dockerImage struct {
	entrypoint, cmd []string
}

// dockerImages returns the ENTRYPOINT and CMD of each named stage of the
// Dockerfile.
func dockerImages(t *testing.T) map[string]dockerImage {
	t.Helper()
	images := map[string]dockerImage{}
	stage := ""
	for _, instruction := range readDockerfile(t) {
		switch instruction.command {
		case "FROM":
			stage = ""
			if len(instruction.args) == 3 && strings.EqualFold(instruction.args[1], "AS") {
				stage = instruction.args[2]
			}
		case "ENTRYPOINT":
			image := images[stage]
			image.entrypoint = instruction.args
			images[stage] = image
		case "CMD":
			image := images[stage]
			image.cmd = instruction.args
			images[stage] = image
		}
	}
	return images
}

// runsSSEGW returns the arguments after the program when command (a
// program and its arguments) runs ssegw.
func runsSSEGW(command []string) ([]string, bool) {
	if len(command) == 0 || path.Base(command[0]) != programName {
		return nil, false
	}
	return command[1:], true
}

// dockerfileCommands returns the default command of every stage whose
// ENTRYPOINT is ssegw.
func dockerfileCommands(t *testing.T) []commandLine {
	t.Helper()
	var commands []commandLine
	for stage, image := range dockerImages(t) {
		if args, ok := runsSSEGW(image.entrypoint); ok {
			commands = append(commands, commandLine{dockerfilePath + " stage " + stage + " CMD", slices.Concat(args, image.cmd)})
		}
	}
	return commands
}

// composeCommands returns the command of every compose service that runs
// ssegw: its image's ENTRYPOINT, or the service's own entrypoint, is
// ssegw. The image is the one the service builds from the Dockerfile.
func composeCommands(t *testing.T) []commandLine {
	t.Helper()
	images := dockerImages(t)
	project := loadCompose(t)
	var commands []commandLine
	for _, name := range project.ServiceNames() {
		s := project.Services[name]
		if s.Build == nil {
			continue // another project's image, such as the collector's
		}
		image := images[s.Build.Target]
		entrypoint, command := image.entrypoint, image.cmd
		if len(s.Entrypoint) > 0 {
			entrypoint, command = s.Entrypoint, nil
		}
		if len(s.Command) > 0 {
			command = s.Command
		}
		if args, ok := runsSSEGW(entrypoint); ok {
			commands = append(commands, commandLine{composePath + " service " + name, slices.Concat(args, command)})
		}
	}
	return commands
}

// kubernetesCommands returns the command of every container of the
// Kubernetes base that runs the ssegw image: its args after the image's
// ENTRYPOINT, or its own command.
func kubernetesCommands(t *testing.T) []commandLine {
	t.Helper()
	var commands []commandLine
	for _, object := range renderBase(t) {
		deployment, ok := object.(*appsv1.Deployment)
		if !ok {
			continue
		}
		for _, c := range deployment.Spec.Template.Spec.Containers {
			if c.Image != baseImage {
				continue
			}
			args, runs := slices.Clone(c.Args), true
			if len(c.Command) > 0 {
				args, runs = runsSSEGW(slices.Concat(c.Command, c.Args))
			}
			if !runs {
				t.Errorf("deployment %s container %s runs %q, not %s", deployment.Name, c.Name, c.Command, programName)
				continue
			}
			commands = append(commands, commandLine{kubernetesDir + "/base deployment " + deployment.Name + " container " + c.Name, args})
		}
	}
	return commands
}

// systemdCommands returns the unit's ExecStart= commands that run ssegw.
func systemdCommands(t *testing.T) []commandLine {
	t.Helper()
	var commands []commandLine
	for _, value := range readUnit(t).values("Service", "ExecStart") {
		// systemd's prefixes, such as "-" to ignore the exit status, are
		// not part of the path.
		fields := strings.Fields(value)
		if len(fields) > 0 {
			fields[0] = strings.TrimLeft(fields[0], "-@:+!")
		}
		if args, ok := runsSSEGW(fields); ok {
			commands = append(commands, commandLine{unitPath + " ExecStart", args})
		}
	}
	return commands
}

// scriptCommands returns the lines of the shell script at file (a path
// from the repository's root) that start by running ssegw. It splits
// words as the shell does for what the script uses: blanks, and single
// and double quotes. Variables stay unexpanded, since --help does not
// read the values.
func scriptCommands(t *testing.T, file string) []commandLine {
	t.Helper()
	var commands []commandLine
	scanner := bufio.NewScanner(bytes.NewReader(readFile(t, file)))
	for number := 1; scanner.Scan(); number++ {
		words := shellWords(t, scanner.Text())
		if args, ok := runsSSEGW(words); ok {
			commands = append(commands, commandLine{fmt.Sprintf("%s:%d", file, number), args})
		}
	}
	return commands
}

// shellWords splits one line of a shell script into words: blanks
// separate them, quotes group them, and a # that starts a word starts a
// comment. It fails the test on an unclosed quote.
func shellWords(t *testing.T, line string) []string {
	t.Helper()
	var words []string
	var word strings.Builder
	inWord := false
	quote := rune(0)
	for _, r := range line {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			word.WriteRune(r)
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, word.String())
				word.Reset()
				inWord = false
			}
		case r == '#' && !inWord:
			return words
		default:
			word.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		t.Fatalf("line %q has an unclosed %c quote", line, quote)
	}
	if inWord {
		words = append(words, word.String())
	}
	return words
}

// buildSSEGW builds the repository's ssegw into a temporary folder and
// returns its path.
func buildSSEGW(t *testing.T) string {
	t.Helper()
	goCommand, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build ssegw: %v", err)
	}
	program := filepath.Join(t.TempDir(), programName)
	build := exec.Command(goCommand, "build", "-o", program, "./cmd/ssegw")
	build.Dir = repoRoot
	if output, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/ssegw: %v\n%s", err, output)
	}
	return program
}

// TestCommandsMatchCLI checks every command that the deployment files
// give ssegw by running the real ssegw with its arguments and --help,
// which makes ssegw parse the subcommand and every flag and print help
// instead of running. A renamed subcommand or flag then fails here, and
// the help's usage line must name the subcommand that the arguments start
// with, so that an unknown word cannot fall back to a parent's help.
func TestCommandsMatchCLI(t *testing.T) {
	program := buildSSEGW(t)

	sources := []struct {
		name     string
		commands []commandLine
	}{
		{dockerfilePath, dockerfileCommands(t)},
		{composePath, composeCommands(t)},
		{kubernetesDir + "/base", kubernetesCommands(t)},
		{unitPath, systemdCommands(t)},
		{initCertsPath, scriptCommands(t, initCertsPath)},
	}
	for _, source := range sources {
		if len(source.commands) == 0 {
			t.Errorf("%s: found no command that runs %s; this test reads the ways shown in its helpers", source.name, programName)
		}
		for _, command := range source.commands {
			checkCommand(t, program, command)
		}
	}
}

// checkCommand runs program with the command's arguments and --help.
func checkCommand(t *testing.T, program string, command commandLine) {
	t.Helper()
	var subcommand []string
	for _, arg := range command.args {
		if strings.HasPrefix(arg, "-") {
			break
		}
		subcommand = append(subcommand, arg)
	}
	if len(subcommand) == 0 {
		t.Errorf("%s: %s %q names no subcommand", command.source, programName, command.args)
		return
	}

	t.Logf("%s: %s %s", command.source, programName, strings.Join(command.args, " "))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	output, err := exec.CommandContext(ctx, program, append(slices.Clone(command.args), "--help")...).CombinedOutput()
	if err != nil {
		t.Errorf("%s: %s %s --help: %v\n%s", command.source, programName, strings.Join(command.args, " "), err, output)
		return
	}
	want := strings.Join(append([]string{programName}, subcommand...), " ")
	if usage := usageLine(string(output)); usage != want && !strings.HasPrefix(usage, want+" ") {
		t.Errorf("%s: %s %s --help printed the usage %q, want that of %q:\n%s", command.source, programName, strings.Join(command.args, " "), usage, want, output)
	}
}

// usageLine returns the first line after "Usage:" in a command's help,
// such as "ssegw serve [flags]", or "" when there is none.
func usageLine(help string) string {
	_, after, found := strings.Cut(help, "\nUsage:\n")
	if !found {
		return ""
	}
	line, _, _ := strings.Cut(after, "\n")
	return strings.TrimSpace(line)
}
