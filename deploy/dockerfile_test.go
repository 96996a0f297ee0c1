package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

const (
	dockerfilePath   = "deploy/Dockerfile"
	dockerignorePath = "deploy/Dockerfile.dockerignore"

	// mainModule is the module whose files the image build copies.
	mainModule = "github.com/ssegw/ssegw"
)

// dockerInstruction is one instruction of a Dockerfile, with its
// continuation lines joined.
type dockerInstruction struct {
	line    int
	command string   // upper case, such as COPY
	flags   []string // such as --from=build, in order
	args    []string // the rest: words, or the elements of the JSON form
}

// flag returns the value of --name=value among the instruction's flags.
func (i dockerInstruction) flag(name string) (string, bool) {
	for _, flag := range i.flags {
		if value, ok := strings.CutPrefix(flag, "--"+name+"="); ok {
			return value, true
		}
	}
	return "", false
}

// readDockerfile parses the Dockerfile's instructions. It supports what
// the project's Dockerfile uses: comments, backslash continuations, flags
// and the JSON form; not heredocs or another escape character.
func readDockerfile(t *testing.T) []dockerInstruction {
	t.Helper()
	var instructions []dockerInstruction
	var pending strings.Builder
	start := 0
	scanner := bufio.NewScanner(bytes.NewReader(readFile(t, dockerfilePath)))
	for line := 1; scanner.Scan(); line++ {
		text := strings.TrimSpace(scanner.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue // comments may also sit between continuation lines
		}
		if pending.Len() == 0 {
			start = line
		}
		if continued, ok := strings.CutSuffix(text, `\`); ok {
			pending.WriteString(continued + " ")
			continue
		}
		pending.WriteString(text)
		instructions = append(instructions, parseInstruction(t, start, pending.String()))
		pending.Reset()
	}
	if pending.Len() > 0 {
		t.Fatalf("%s:%d: the last instruction ends with a continuation", dockerfilePath, start)
	}
	return instructions
}

// parseInstruction splits one joined instruction into its parts.
func parseInstruction(t *testing.T, line int, text string) dockerInstruction {
	t.Helper()
	command, rest, _ := strings.Cut(text, " ")
	instruction := dockerInstruction{line: line, command: strings.ToUpper(command)}
	words := strings.Fields(rest)
	for len(words) > 0 && strings.HasPrefix(words[0], "--") {
		instruction.flags = append(instruction.flags, words[0])
		words = words[1:]
	}
	remainder := strings.Join(words, " ")
	if strings.HasPrefix(remainder, "[") {
		if err := json.Unmarshal([]byte(remainder), &instruction.args); err != nil {
			t.Fatalf("%s:%d: invalid JSON form %s: %v", dockerfilePath, line, remainder, err)
		}
	} else {
		instruction.args = words
	}
	return instruction
}

// dockerStage is one FROM of a Dockerfile.
type dockerStage struct {
	name  string // after AS; empty when unnamed
	image string // with global ARG defaults substituted
	user  string // of the stage's last USER instruction
}

// readStages returns the Dockerfile's stages in order.
func readStages(t *testing.T, instructions []dockerInstruction) []dockerStage {
	t.Helper()
	globalArgs := map[string]string{}
	var stages []dockerStage
	for _, instruction := range instructions {
		switch {
		case instruction.command == "ARG" && len(stages) == 0:
			name, value, _ := strings.Cut(instruction.args[0], "=")
			globalArgs[name] = value
		case instruction.command == "FROM":
			stage := dockerStage{image: os.Expand(instruction.args[0], func(name string) string { return globalArgs[name] })}
			if len(instruction.args) == 3 && strings.EqualFold(instruction.args[1], "AS") {
				stage.name = instruction.args[2]
			}
			stages = append(stages, stage)
		case instruction.command == "USER" && len(stages) > 0:
			stages[len(stages)-1].user = instruction.args[0]
		}
	}
	if len(stages) == 0 {
		t.Fatalf("%s has no FROM", dockerfilePath)
	}
	return stages
}

// stageNames returns the names of the stages.
func stageNames(stages []dockerStage) []string {
	var names []string
	for _, stage := range stages {
		names = append(names, stage.name)
	}
	return names
}

// buildContext returns the files of the repository that a build of the
// Dockerfile with the repository's root as context receives, after its
// dockerignore file, with slash-separated paths from the root.
func buildContext(t *testing.T) []string {
	t.Helper()
	patterns, err := ignorefile.ReadAll(bytes.NewReader(readFile(t, dockerignorePath)))
	if err != nil {
		t.Fatalf("%s: %v", dockerignorePath, err)
	}
	matcher, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatalf("%s: %v", dockerignorePath, err)
	}

	var files []string
	err = filepath.WalkDir(repoRoot, func(file string, entry fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		relative, err := filepath.Rel(repoRoot, file)
		if err != nil || entry.IsDir() {
			return err
		}
		relative = filepath.ToSlash(relative)
		excluded, err := matcher.MatchesOrParentMatches(relative)
		if err != nil {
			return err
		}
		if !excluded {
			files = append(files, relative)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestDockerfileStages checks that every image is pinned to a version,
// that --from names an earlier stage, and that the image runs as a user
// other than root.
func TestDockerfileStages(t *testing.T) {
	instructions := readDockerfile(t)
	stages := readStages(t, instructions)

	for i, stage := range stages {
		if slices.Contains(stageNames(stages[:i]), stage.image) {
			continue
		}
		_, tag, hasTag := strings.Cut(path.Base(stage.image), ":")
		if !hasTag && !strings.Contains(stage.image, "@sha256:") || tag == "latest" {
			t.Errorf("stage %d (%s) starts from %q, want an image with a version tag or digest", i, stage.name, stage.image)
		}
	}

	seen := 0
	for _, instruction := range instructions {
		if instruction.command == "FROM" {
			seen++
		}
		from, ok := instruction.flag("from")
		if ok && !slices.Contains(stageNames(stages[:seen-1]), from) {
			t.Errorf("%s:%d: --from=%s names no earlier stage", dockerfilePath, instruction.line, from)
		}
	}

	// The last stage is what a plain docker build produces.
	final := stages[len(stages)-1]
	if user, _, _ := strings.Cut(final.user, ":"); user == "" || user == "root" || user == "0" {
		t.Errorf("the final stage %s runs as user %q, want an unprivileged user", final.name, final.user)
	}
}

// TestDockerfileSourcesExist checks that every COPY and ADD source from
// the build context matches files that the dockerignore file lets in.
func TestDockerfileSourcesExist(t *testing.T) {
	context := buildContext(t)

	for _, instruction := range readDockerfile(t) {
		if instruction.command != "COPY" && instruction.command != "ADD" {
			continue
		}
		if _, fromStage := instruction.flag("from"); fromStage {
			continue
		}
		if len(instruction.args) < 2 {
			t.Errorf("%s:%d: %s needs a source and a destination", dockerfilePath, instruction.line, instruction.command)
			continue
		}
		for _, source := range instruction.args[:len(instruction.args)-1] {
			if !contextHas(context, source) {
				t.Errorf("%s:%d: %s source %q matches nothing in the build context", dockerfilePath, instruction.line, instruction.command, source)
			}
		}
	}
}

// contextHas reports whether source, a COPY source with optional
// wildcards, matches a file of the context or a folder that contains one.
func contextHas(context []string, source string) bool {
	source = path.Clean(strings.TrimPrefix(source, "/"))
	if source == "." {
		return len(context) > 0
	}
	for _, file := range context {
		for candidate := file; candidate != "."; candidate = path.Dir(candidate) {
			if matched, _ := path.Match(source, candidate); matched {
				return true
			}
		}
	}
	return false
}

// TestDockerContextHasBuildInputs checks that the dockerignore file
// lets in every file that go build reads for the gateway: its Go files and
// embedded files as go list reports them, and go.mod and go.sum.
func TestDockerContextHasBuildInputs(t *testing.T) {
	goCommand, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list the build's files: %v", err)
	}
	list := exec.Command(goCommand, "list", "-deps", "-json=Dir,GoFiles,EmbedFiles,Module", "./cmd/ssegw")
	list.Dir = repoRoot
	// The image's build: static, for Linux.
	list.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	output, err := list.Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			t.Fatalf("go list: %v\n%s", err, exit.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}

	needed := []string{"go.mod", "go.sum"}
	decoder := json.NewDecoder(bytes.NewReader(output))
	for {
		var pkg struct {
			Dir        string
			GoFiles    []string
			EmbedFiles []string
			Module     *struct{ Path string }
		}
		err := decoder.Decode(&pkg)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("decoding go list's output: %v", err)
		}
		if pkg.Module == nil || pkg.Module.Path != mainModule {
			continue
		}
		for _, name := range slices.Concat(pkg.GoFiles, pkg.EmbedFiles) {
			relative, err := filepath.Rel(root, filepath.Join(pkg.Dir, name))
			if err != nil {
				t.Fatal(err)
			}
			needed = append(needed, filepath.ToSlash(relative))
		}
	}

	context := buildContext(t)
	for _, file := range needed {
		if !slices.Contains(context, file) {
			t.Errorf("%s is needed to build ssegw but %s leaves it out of the build context", file, dockerignorePath)
		}
	}
	if len(needed) < 10 {
		t.Errorf("go list named only %q; expected the gateway's packages", needed)
	}
}
