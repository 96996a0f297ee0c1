package config_test

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"github.com/ssegw/ssegw/config"
)

// fuzzTopLevelKeys are the keys a Config file can hold at its top level.
var fuzzTopLevelKeys = func() []string {
	var keys []string
	typ := reflect.TypeFor[config.Config]()
	for i := range typ.NumField() {
		if key := typ.Field(i).Tag.Get("mapstructure"); key != "" && key != "-" {
			keys = append(keys, key)
		}
	}
	return keys
}()

// startsWithKey reports whether an error line starts with what Parse
// promises: a key of the file, such as "engines.R.backends[0].address: ",
// "top level: " for an unknown key there, the environment variable at
// fault, or "invalid YAML".
func startsWithKey(line string) bool {
	for _, prefix := range []string{"invalid YAML", "top level: ", "environment variable " + config.EnvPrefix} {
		if strings.HasPrefix(line, prefix) {
			return true
		}
	}
	for _, key := range fuzzTopLevelKeys {
		rest, ok := strings.CutPrefix(line, key)
		if ok && rest != "" && strings.ContainsRune(".[:", rune(rest[0])) {
			return true
		}
	}
	return false
}

// fuzzSkipsPath reports whether text names a device or kernel file
// system. Parse reads the certificate files a configuration names, and
// reading /dev/zero or /dev/stdin would never end.
func fuzzSkipsPath(text []byte) bool {
	for _, root := range []string{"/dev", "/proc", "/sys"} {
		if bytes.Contains(text, []byte(root)) {
			return true
		}
	}
	return false
}

// shellName returns name with every character that a shell does not
// allow in a variable name replaced by an underscore.
func shellName(name string) string {
	return strings.Map(func(r rune) rune {
		if r == '_' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' {
			return r
		}
		return '_'
	}, name)
}

// FuzzParse feeds arbitrary bytes and one SSEGW_ variable, named as a
// shell can name it, to Parse, which must never panic. It returns either
// a configuration or an error, and every line of an error starts with the
// key at fault or "invalid YAML".
func FuzzParse(f *testing.F) {
	f.Add([]byte("listeners: [{address: \"127.0.0.1:0\", insecure: true, engine: R}]\nengines:\n  R:\n    backends: [{address: \"127.0.0.1:50055\"}]\n"), "", "")
	f.Add([]byte("listeners:\n  - address: \"0.0.0.0:50051\"\n    insecure: true\nengines:\n  SSEPython:\n    request_timeout: 30\n    scripts: audit\n    allow_clients: [sse_client, \"sha256:00\"]\n    backends: [{address: \"localhost:50055\", tls: {dir: certs}}]\n"), "ENGINES_SSEPYTHON_REQUEST_TIMEOUT", "1m")
	f.Add([]byte("listeners: [{address: \":0\", insecure: true, insecure_remote: true}]\nengines: {R: , r: }\nlimits: {max_message_size: 4MiB, max_header_list_size: 1KiB, first_message_timeout: -1s}\n"), "LISTENERS_0_ADDRESS", "127.0.0.1:1")
	f.Add([]byte("engines:\n  \"a b\": {backends: [{address: x}]}\nlog: {level: loud}\nunknown: 1\n"), "LOG_LEVEL", "debug")
	f.Add([]byte("listeners: [\n"), "", "")
	f.Add([]byte("engines:\n  R:\n    functions: {F: {request_timeout: 1h, max_attempts: 11}}\n    backends: []\n"), "ENGINES", "x")
	f.Fuzz(func(t *testing.T, data []byte, envName, envValue string) {
		if fuzzSkipsPath(data) || fuzzSkipsPath([]byte(envValue)) {
			return
		}
		var environ []string
		if envName != "" {
			environ = []string{config.EnvPrefix + shellName(envName) + "=" + envValue}
		}
		cfg, err := config.Parse(data, environ)
		if err == nil {
			if cfg == nil {
				t.Fatalf("Parse(%q, %q) = nil, nil; want a configuration or an error", data, environ)
			}
			return
		}
		if cfg != nil {
			t.Fatalf("Parse(%q, %q) returned a configuration and the error %q", data, environ, err)
		}
		for line := range strings.SplitSeq(err.Error(), "\n") {
			if !startsWithKey(line) {
				t.Fatalf("Parse(%q, %q) error line %q does not start with a key or \"invalid YAML\"; error:\n%s", data, environ, line, err)
			}
		}
	})
}
