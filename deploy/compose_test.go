package deploy

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

const (
	composePath = "deploy/compose.yaml"

	// Service names of the compose file.
	gatewayService = "gateway"
	certsService   = "certs"
)

// loadCompose loads the compose file as docker compose would, with no
// variables from the environment, so that every default applies. The
// loader checks the file against the Compose Specification's schema, so
// an unknown key fails here.
func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	options, err := cli.NewProjectOptions(
		[]string{filepath.Join(repoRoot, composePath)},
		cli.WithWorkingDirectory(filepath.Join(repoRoot, filepath.Dir(composePath))),
		cli.WithEnv(nil),
	)
	if err != nil {
		t.Fatal(err)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("loading %s: %v", composePath, err)
	}
	return project
}

// service returns the compose service with the given name.
func service(t *testing.T, project *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, ok := project.Services[name]
	if !ok {
		t.Fatalf("%s has no service %q", composePath, name)
	}
	return s
}

// volumeAt returns the service's volume mounted at target.
func volumeAt(t *testing.T, s types.ServiceConfig, target string) types.ServiceVolumeConfig {
	t.Helper()
	for _, volume := range s.Volumes {
		if filepath.Clean(volume.Target) == filepath.Clean(target) {
			return volume
		}
	}
	t.Fatalf("service %s mounts nothing at %s", s.Name, target)
	return types.ServiceVolumeConfig{}
}

// TestComposeReferencesExist checks that every file the compose file
// names exists: build contexts, Dockerfiles and their targets, bind
// mounts, config files and env files.
func TestComposeReferencesExist(t *testing.T) {
	project := loadCompose(t)
	stages := stageNames(readStages(t, readDockerfile(t)))
	dockerfile, err := filepath.Abs(filepath.Join(repoRoot, dockerfilePath))
	if err != nil {
		t.Fatal(err)
	}

	for _, name := range project.ServiceNames() {
		s := project.Services[name]
		if s.Build != nil {
			checkExists(t, "service "+name+" build context", s.Build.Context)
			file := filepath.Join(s.Build.Context, s.Build.Dockerfile)
			checkExists(t, "service "+name+" Dockerfile", file)
			if file != dockerfile {
				t.Errorf("service %s builds %s; this test checks the targets of %s only", name, file, dockerfilePath)
			} else if !slices.Contains(stages, s.Build.Target) {
				t.Errorf("service %s builds target %q, which is not a stage of %s: %q", name, s.Build.Target, dockerfilePath, stages)
			}
		}
		for _, volume := range s.Volumes {
			if volume.Type == types.VolumeTypeBind {
				checkExists(t, "service "+name+" bind mount", volume.Source)
			}
		}
		for _, config := range s.Configs {
			file, ok := project.Configs[config.Source]
			if !ok {
				t.Errorf("service %s uses config %q, which the file does not define", name, config.Source)
				continue
			}
			checkExists(t, "config "+config.Source, file.File)
		}
		for _, env := range s.EnvFiles {
			if env.Required {
				checkExists(t, "service "+name+" env_file", env.Path)
			}
		}
	}
}

// checkExists fails the test when file does not exist.
func checkExists(t *testing.T, what, file string) {
	t.Helper()
	if _, err := os.Stat(file); err != nil {
		t.Errorf("%s: %v", what, err)
	}
}

// TestComposeGatewayConfig loads the gateway's configuration of the
// compose file and checks it against the services: its file is the one
// mounted at --config, its folders are volumes, its ports are
// published, and its plugins and collector are services.
func TestComposeGatewayConfig(t *testing.T) {
	project := loadCompose(t)
	gateway := service(t, project, gatewayService)

	// The configuration file is the config mounted where --config points.
	configFile := flagValue(t, gateway.Command, "--config")
	var source string
	for _, config := range gateway.Configs {
		if config.Target == configFile {
			source = project.Configs[config.Source].File
		}
	}
	if source == "" {
		t.Fatalf("service %s runs --config %s, but no config is mounted there", gatewayService, configFile)
	}
	data, err := os.ReadFile(source)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := loadGatewayConfig(t, data)
	if err != nil {
		t.Fatalf("%s:\n%v", source, err)
	}

	// The certificate folder is a volume that the certs service fills
	// before the gateway starts.
	for i, listener := range readConfigShape(t, data).Listeners {
		if listener.TLS == nil {
			t.Errorf("listeners[%d] has no tls section", i)
			continue
		}
		tlsVolume := volumeAt(t, gateway, listener.TLS.Dir)
		certsVolume := volumeAt(t, service(t, project, certsService), listener.TLS.Dir)
		if tlsVolume.Source != certsVolume.Source || tlsVolume.Type != types.VolumeTypeVolume {
			t.Errorf("listeners[%d].tls.dir %s is %s %q in %s and %s %q in %s, want the same named volume",
				i, listener.TLS.Dir, tlsVolume.Type, tlsVolume.Source, gatewayService, certsVolume.Type, certsVolume.Source, certsService)
		}
	}
	dependency, ok := gateway.DependsOn[certsService]
	if !ok || dependency.Condition != types.ServiceConditionCompletedSuccessfully {
		t.Errorf("service %s depends on %s with %+v, want condition %s", gatewayService, certsService, dependency, types.ServiceConditionCompletedSuccessfully)
	}
	if volumeAt(t, gateway, cfg.StateDir).Type != types.VolumeTypeVolume {
		t.Errorf("state_dir %s is not a named volume of service %s", cfg.StateDir, gatewayService)
	}

	// Docker sends SIGKILL when the grace period ends, which would cut
	// the drain short.
	if grace := gateway.StopGracePeriod; grace == nil || time.Duration(*grace) <= cfg.DrainTimeout {
		t.Errorf("service %s stop_grace_period = %v, want more than drain_timeout %v", gatewayService, grace, cfg.DrainTimeout)
	}

	// Listener ports are published; the admin port on loopback only.
	published := map[int]string{}
	for _, port := range gateway.Ports {
		published[int(port.Target)] = port.HostIP
	}
	for i, listener := range cfg.Listeners {
		if _, port := splitHostPort(t, listener.Address); !hasKey(published, port) {
			t.Errorf("listeners[%d] port %d is not published by service %s", i, port, gatewayService)
		}
	}
	if _, adminPort := splitHostPort(t, cfg.Admin.Address); published[adminPort] != "127.0.0.1" {
		t.Errorf("admin port %d is published on %q, want 127.0.0.1 only: the status page shows app and user ids", adminPort, published[adminPort])
	}

	// Each backend is a plugin service listening on the backend's port.
	for _, name := range cfg.EngineNames() {
		for i, backend := range cfg.Engine(name).Backends {
			host, port := splitHostPort(t, backend.Address)
			plugin := service(t, project, host)
			if _, pluginPort := splitHostPort(t, flagValue(t, plugin.Command, "--address")); pluginPort != port {
				t.Errorf("engines.%s.backends[%d] is port %d of %s, which listens on %d", name, i, port, host, pluginPort)
			}
		}
	}

	// Traces go to a service of the file.
	if host, _ := splitHostPort(t, cfg.Telemetry.Traces.Endpoint); !hasKey(project.Services, host) {
		t.Errorf("telemetry.traces.endpoint %s names no service of %s", cfg.Telemetry.Traces.Endpoint, composePath)
	}
}

// hasKey reports whether m has the key.
func hasKey[K comparable, V any](m map[K]V, key K) bool {
	_, ok := m[key]
	return ok
}
