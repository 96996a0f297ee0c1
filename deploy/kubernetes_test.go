package deploy

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/tlsutil"
)

const (
	kubernetesDir   = "deploy/kubernetes"
	deployGuidePath = "docs/DEPLOY.md"

	// Names given in the base, which the checks below look up.
	namespaceName     = "ssegw"
	gatewayName       = "ssegw"
	pluginName        = "sse-plugins"
	configMapName     = "ssegw-config"
	tlsSecretName     = "ssegw-tls"
	configKey         = "config.yaml"
	gatewayContainer  = "ssegw"
	pluginContainer   = "plugin"
	clusterDomain     = "cluster.local"
	minGatewayReplica = 2
)

// scheme holds the API types of every kind the manifests use. A kind
// missing here fails decoding, so a new kind in the manifests needs its
// group added.
var scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(corev1.AddToScheme(scheme))
	utilruntime.Must(appsv1.AddToScheme(scheme))
	utilruntime.Must(policyv1.AddToScheme(scheme))
	utilruntime.Must(networkingv1.AddToScheme(scheme))
}

// strictDecoder decodes YAML or JSON into the API types, and fails on
// unknown and duplicate fields, as kubectl apply --validate=strict does.
var strictDecoder = serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()

// namedObject is an API object with metadata.
type namedObject interface {
	runtime.Object
	GetName() string
	GetNamespace() string
}

// render builds the kustomization in dir of fsys and decodes every
// object strictly.
func render(t *testing.T, fsys filesys.FileSystem, dir string) []namedObject {
	t.Helper()
	resources, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fsys, dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var objects []namedObject
	for _, res := range resources.Resources() {
		data, err := res.AsYAML()
		if err != nil {
			t.Fatalf("%s: %v", res.CurId(), err)
		}
		object, _, err := strictDecoder.Decode(data, nil, nil)
		if err != nil {
			t.Errorf("%s: %v", res.CurId(), err)
			continue
		}
		named, ok := object.(namedObject)
		if !ok {
			t.Fatalf("%s: decoded into %T, which has no metadata", res.CurId(), object)
		}
		objects = append(objects, named)
	}
	if t.Failed() {
		t.FailNow()
	}
	return objects
}

// renderBase builds the base from the repository's folder.
func renderBase(t *testing.T) []namedObject {
	t.Helper()
	return render(t, filesys.MakeFsOnDisk(), filepath.Join(repoRoot, kubernetesDir, "base"))
}

// find returns the object of type T with the given name.
func find[T namedObject](t *testing.T, objects []namedObject, name string) T {
	t.Helper()
	for _, object := range objects {
		if typed, ok := object.(T); ok && typed.GetName() == name {
			return typed
		}
	}
	var zero T
	t.Fatalf("no %T named %q among the rendered objects", zero, name)
	return zero
}

// container returns the container of the pod template with the given
// name.
func container(t *testing.T, deployment *appsv1.Deployment, name string) *corev1.Container {
	t.Helper()
	for i := range deployment.Spec.Template.Spec.Containers {
		if deployment.Spec.Template.Spec.Containers[i].Name == name {
			return &deployment.Spec.Template.Spec.Containers[i]
		}
	}
	t.Fatalf("deployment %s has no container %q", deployment.Name, name)
	return nil
}

// volumeMountedAt returns the pod volume that the container mounts at
// mountPath.
func volumeMountedAt(t *testing.T, deployment *appsv1.Deployment, c *corev1.Container, mountPath string) corev1.Volume {
	t.Helper()
	for _, mount := range c.VolumeMounts {
		if path.Clean(mount.MountPath) != path.Clean(mountPath) {
			continue
		}
		if mount.SubPath != "" {
			t.Errorf("container %s mounts %s with subPath %q; the kubelet never updates such a mount, so reloads would not see changes", c.Name, mountPath, mount.SubPath)
		}
		for _, volume := range deployment.Spec.Template.Spec.Volumes {
			if volume.Name == mount.Name {
				return volume
			}
		}
		t.Fatalf("container %s mounts volume %q, which the pod does not define", c.Name, mount.Name)
	}
	t.Fatalf("container %s mounts nothing at %s", c.Name, mountPath)
	return corev1.Volume{}
}

// containerPort returns the port number of the container's port with the
// given name.
func containerPort(t *testing.T, c *corev1.Container, name string) int {
	t.Helper()
	for _, port := range c.Ports {
		if port.Name == name {
			return int(port.ContainerPort)
		}
	}
	t.Fatalf("container %s has no port named %q", c.Name, name)
	return 0
}

// flagValue returns the value that follows flag in args.
func flagValue(t *testing.T, args []string, flag string) string {
	t.Helper()
	i := slices.Index(args, flag)
	if i < 0 || i+1 == len(args) {
		t.Fatalf("arguments %q have no %s with a value", args, flag)
	}
	return args[i+1]
}

// gatewayConfig loads the gateway configuration of the rendered ConfigMap.
func gatewayConfig(t *testing.T, objects []namedObject) *config.Config {
	t.Helper()
	configMap := find[*corev1.ConfigMap](t, objects, configMapName)
	data, ok := configMap.Data[configKey]
	if !ok {
		t.Fatalf("ConfigMap %s has no key %s", configMapName, configKey)
	}
	cfg, err := loadGatewayConfig(t, []byte(data))
	if err != nil {
		t.Fatalf("ConfigMap %s, %s:\n%v", configMapName, configKey, err)
	}
	return cfg
}

// TestStrictDecodingRejectsUnknownFields shows that the decoding the
// other tests rely on fails on a misspelt field, which kubectl would
// otherwise drop with a warning.
func TestStrictDecodingRejectsUnknownFields(t *testing.T) {
	manifest := []byte(`
apiVersion: apps/v1
kind: Deployment
metadata: {name: typo}
spec:
  replica: 3
  selector: {matchLabels: {app: typo}}
  template:
    metadata: {labels: {app: typo}}
    spec: {containers: [{name: typo, image: typo}]}
`)
	_, _, err := strictDecoder.Decode(manifest, nil, nil)
	if !runtime.IsStrictDecodingError(err) {
		t.Fatalf("decoding a Deployment with spec.replica: error %v, want a strict decoding error", err)
	}
}

// TestBaseObjects checks that the base renders, that every object decodes
// strictly, and that it holds exactly the expected objects.
func TestBaseObjects(t *testing.T) {
	objects := renderBase(t)

	var got []string
	for _, object := range objects {
		kind := fmt.Sprintf("%T", object)
		got = append(got, kind[strings.LastIndex(kind, ".")+1:]+"/"+object.GetName())
		if _, isNamespace := object.(*corev1.Namespace); !isNamespace && object.GetNamespace() != namespaceName {
			t.Errorf("%s/%s is in namespace %q, want %q", kind, object.GetName(), object.GetNamespace(), namespaceName)
		}
	}
	slices.Sort(got)
	want := []string{
		"ConfigMap/" + configMapName,
		"Deployment/" + pluginName,
		"Deployment/" + gatewayName,
		"Namespace/" + namespaceName,
		"NetworkPolicy/" + gatewayName,
		"NetworkPolicy/" + pluginName,
		"PodDisruptionBudget/" + gatewayName,
		"Service/" + pluginName,
		"Service/" + gatewayName,
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("rendered objects = %q, want %q", got, want)
	}
}

// TestGatewayDeployment checks the gateway's pods against the
// configuration they run: mounts at the configured paths, probes on the
// admin port, a grace period longer than the drain, and the security
// settings.
func TestGatewayDeployment(t *testing.T) {
	objects := renderBase(t)
	deployment := find[*appsv1.Deployment](t, objects, gatewayName)
	gateway := container(t, deployment, gatewayContainer)
	cfg := gatewayConfig(t, objects)

	// Several independent replicas, replaced one at a time.
	if replicas := deployment.Spec.Replicas; replicas == nil || *replicas < minGatewayReplica {
		t.Errorf("gateway replicas = %v, want at least %d", replicas, minGatewayReplica)
	}
	if update := deployment.Spec.Strategy.RollingUpdate; update == nil || update.MaxUnavailable == nil || update.MaxUnavailable.IntValue() != 0 {
		t.Errorf("gateway rolling update = %+v, want maxUnavailable 0, so that a new pod is ready before an old one drains", update)
	}

	// The configuration file the pod runs is the ConfigMap's, mounted as
	// a folder.
	configFile := flagValue(t, gateway.Args, "--config")
	if path.Base(configFile) != configKey {
		t.Errorf("gateway --config %s, want a file named %s, the ConfigMap's key", configFile, configKey)
	}
	configVolume := volumeMountedAt(t, deployment, gateway, path.Dir(configFile))
	if configVolume.ConfigMap == nil || configVolume.ConfigMap.Name != configMapName {
		t.Errorf("volume at %s = %+v, want ConfigMap %s", path.Dir(configFile), configVolume.VolumeSource, configMapName)
	}

	// Every listener's certificates are the Secret's folder, as the file
	// names it, and each listener's port is a container port.
	shape := readConfigShape(t, []byte(find[*corev1.ConfigMap](t, objects, configMapName).Data[configKey]))
	for i, listener := range cfg.Listeners {
		if shape.Listeners[i].TLS == nil {
			t.Errorf("listeners[%d] has no tls section", i)
		} else {
			dir := shape.Listeners[i].TLS.Dir
			tlsVolume := volumeMountedAt(t, deployment, gateway, dir)
			if tlsVolume.Secret == nil || tlsVolume.Secret.SecretName != tlsSecretName {
				t.Errorf("listeners[%d].tls.dir %s is %+v, want Secret %s", i, dir, tlsVolume.VolumeSource, tlsSecretName)
			}
		}
		_, port := splitHostPort(t, listener.Address)
		if !slices.ContainsFunc(gateway.Ports, func(p corev1.ContainerPort) bool { return int(p.ContainerPort) == port }) {
			t.Errorf("listeners[%d] listens on port %d, which the container does not declare", i, port)
		}
	}

	// Capabilities are kept per pod, on an emptyDir.
	stateVolume := volumeMountedAt(t, deployment, gateway, cfg.StateDir)
	if stateVolume.EmptyDir == nil {
		t.Errorf("volume at state_dir %s = %+v, want an emptyDir", cfg.StateDir, stateVolume.VolumeSource)
	}

	// Probes reach the admin listener.
	adminHost, adminPort := splitHostPort(t, cfg.Admin.Address)
	if adminHost != "" && adminHost != "0.0.0.0" && adminHost != "::" {
		t.Errorf("admin.address %s listens on %s only, out of the kubelet's reach", cfg.Admin.Address, adminHost)
	}
	if port := containerPort(t, gateway, "admin"); port != adminPort {
		t.Errorf("container port admin = %d, want admin.address's port %d", port, adminPort)
	}
	probes := []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"readiness", gateway.ReadinessProbe, "/readyz"},
		{"liveness", gateway.LivenessProbe, "/healthz"},
	}
	for _, p := range probes {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s probe = %+v, want an HTTP GET of %s", p.name, p.probe, p.path)
			continue
		}
		if p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.String() != "admin" {
			t.Errorf("%s probe gets %s on port %s, want %s on port admin", p.name, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), p.path)
		}
	}

	// The pod waits before SIGTERM, so that the Service stops sending it
	// connections before the gateway closes its listeners, then drains
	// for drain_timeout, all before the kubelet's SIGKILL.
	var wait int64
	if stop := gateway.Lifecycle; stop == nil || stop.PreStop == nil || stop.PreStop.Sleep == nil || stop.PreStop.Sleep.Seconds < 1 {
		t.Errorf("gateway lifecycle = %+v, want a preStop sleep", gateway.Lifecycle)
	} else {
		wait = stop.PreStop.Sleep.Seconds
	}
	grace := deployment.Spec.Template.Spec.TerminationGracePeriodSeconds
	if grace == nil || float64(*grace-wait) <= cfg.DrainTimeout.Seconds() {
		t.Errorf("terminationGracePeriodSeconds = %v, want more than the preStop sleep (%ds) and drain_timeout (%v) together", grace, wait, cfg.DrainTimeout)
	}

	checkPodSecurity(t, deployment, gateway)
	checkResources(t, gateway)
	checkGoMemoryLimit(t, gateway)
}

// TestGatewayServiceAndDisruptionBudget checks that the Service and the
// PodDisruptionBudget select the gateway's pods, and that the Service
// forwards to an SSE port.
func TestGatewayServiceAndDisruptionBudget(t *testing.T) {
	objects := renderBase(t)
	deployment := find[*appsv1.Deployment](t, objects, gatewayName)
	gateway := container(t, deployment, gatewayContainer)
	podLabels := labels.Set(deployment.Spec.Template.Labels)

	service := find[*corev1.Service](t, objects, gatewayName)
	if !labels.SelectorFromSet(service.Spec.Selector).Matches(podLabels) {
		t.Errorf("Service %s selects %v, which does not match the gateway's pods %v", service.Name, service.Spec.Selector, podLabels)
	}
	if len(service.Spec.Ports) == 0 {
		t.Fatalf("Service %s has no ports", service.Name)
	}
	for _, port := range service.Spec.Ports {
		if port.TargetPort.String() != "sse" || port.Protocol != corev1.ProtocolTCP {
			t.Errorf("Service %s port %d forwards to %s/%s, want the container's port sse over TCP", service.Name, port.Port, port.TargetPort.String(), port.Protocol)
		}
	}
	containerPort(t, gateway, "sse")

	budget := find[*policyv1.PodDisruptionBudget](t, objects, gatewayName)
	selector, err := metav1.LabelSelectorAsSelector(budget.Spec.Selector)
	if err != nil {
		t.Fatalf("PodDisruptionBudget %s selector: %v", budget.Name, err)
	}
	if !selector.Matches(podLabels) {
		t.Errorf("PodDisruptionBudget %s selects %v, which does not match the gateway's pods %v", budget.Name, selector, podLabels)
	}
	if budget.Spec.MaxUnavailable == nil && budget.Spec.MinAvailable == nil {
		t.Errorf("PodDisruptionBudget %s sets neither maxUnavailable nor minAvailable", budget.Name)
	}
}

// policyAllows reports whether an ingress rule of policy lets traffic
// from peer reach port of container c. A nil peer is a pod that no rule
// names: it passes only rules without from. A rule's port is a number or
// the name of one of the container's ports, and an empty list of ports
// allows them all.
func policyAllows(policy *networkingv1.NetworkPolicy, c *corev1.Container, peer labels.Set, port int) bool {
	for _, rule := range policy.Spec.Ingress {
		if !peerAllowed(rule.From, peer) {
			continue
		}
		if len(rule.Ports) == 0 {
			return true
		}
		for _, allowed := range rule.Ports {
			if allowed.Protocol != nil && *allowed.Protocol != corev1.ProtocolTCP {
				continue
			}
			if allowed.Port == nil {
				return true
			}
			first := allowed.Port.IntValue()
			if allowed.Port.Type == intstr.String {
				first = 0
				for _, named := range c.Ports {
					if named.Name == allowed.Port.StrVal {
						first = int(named.ContainerPort)
					}
				}
			}
			last := first
			if allowed.EndPort != nil {
				last = int(*allowed.EndPort)
			}
			if first <= port && port <= last {
				return true
			}
		}
	}
	return false
}

// peerAllowed reports whether a rule's from list lets in peer, a pod of
// the policy's namespace with those labels. A nil peer is any other pod.
// An entry with a namespaceSelector or an ipBlock never lets in a pod of
// the namespace here, so checks that need it fail instead of guessing.
func peerAllowed(from []networkingv1.NetworkPolicyPeer, peer labels.Set) bool {
	if len(from) == 0 {
		return true
	}
	if peer == nil {
		return false
	}
	for _, allowed := range from {
		if allowed.PodSelector == nil || allowed.NamespaceSelector != nil || allowed.IPBlock != nil {
			continue
		}
		selector, err := metav1.LabelSelectorAsSelector(allowed.PodSelector)
		if err == nil && selector.Matches(peer) {
			return true
		}
	}
	return false
}

// TestNetworkPolicies checks that the gateway's pods take connections
// from anywhere on every listener port of the configuration, for Qlik
// outside the cluster, but from no pod on the admin port, where the
// status page shows app and user ids. The plugin's pods take connections
// on its port from the gateway's pods only.
func TestNetworkPolicies(t *testing.T) {
	objects := renderBase(t)
	cfg := gatewayConfig(t, objects)
	gatewayDeployment := find[*appsv1.Deployment](t, objects, gatewayName)
	gateway := container(t, gatewayDeployment, gatewayContainer)
	gatewayPods := labels.Set(gatewayDeployment.Spec.Template.Labels)
	pluginDeployment := find[*appsv1.Deployment](t, objects, pluginName)
	plugin := container(t, pluginDeployment, pluginContainer)
	pluginPods := labels.Set(pluginDeployment.Spec.Template.Labels)

	// The gateway's policy.
	gatewayPolicy := find[*networkingv1.NetworkPolicy](t, objects, gatewayName)
	checkPolicySelects(t, gatewayPolicy, gatewayPods, pluginPods)
	for i, listener := range cfg.Listeners {
		if _, port := splitHostPort(t, listener.Address); !policyAllows(gatewayPolicy, gateway, nil, port) {
			t.Errorf("NetworkPolicy %s does not let every client reach listeners[%d] on port %d", gatewayPolicy.Name, i, port)
		}
	}
	_, adminPort := splitHostPort(t, cfg.Admin.Address)
	for _, peer := range []struct {
		name   string
		labels labels.Set
	}{
		{"any pod", nil},
		{"the plugin's pods", pluginPods},
		{"the gateway's pods", gatewayPods},
	} {
		if policyAllows(gatewayPolicy, gateway, peer.labels, adminPort) {
			t.Errorf("NetworkPolicy %s lets %s reach admin.address port %d, want no pod", gatewayPolicy.Name, peer.name, adminPort)
		}
	}

	// The plugin's policy.
	pluginPolicy := find[*networkingv1.NetworkPolicy](t, objects, pluginName)
	checkPolicySelects(t, pluginPolicy, pluginPods, gatewayPods)
	pluginPort := containerPort(t, plugin, "sse")
	if !policyAllows(pluginPolicy, plugin, gatewayPods, pluginPort) {
		t.Errorf("NetworkPolicy %s does not let the gateway's pods reach the plugin's port %d", pluginPolicy.Name, pluginPort)
	}
	if policyAllows(pluginPolicy, plugin, nil, pluginPort) {
		t.Errorf("NetworkPolicy %s lets any pod reach the plugin's port %d, want the gateway's pods only", pluginPolicy.Name, pluginPort)
	}
	for _, name := range cfg.EngineNames() {
		for i, backend := range cfg.Engine(name).Backends {
			if _, port := splitHostPort(t, backend.Address); !policyAllows(pluginPolicy, plugin, gatewayPods, port) {
				t.Errorf("NetworkPolicy %s does not let the gateway reach engines.%s.backends[%d] on port %d", pluginPolicy.Name, name, i, port)
			}
		}
	}
}

// checkPolicySelects checks that the policy applies to pods, not to
// other, and limits their ingress.
func checkPolicySelects(t *testing.T, policy *networkingv1.NetworkPolicy, pods, other labels.Set) {
	t.Helper()
	selector, err := metav1.LabelSelectorAsSelector(&policy.Spec.PodSelector)
	if err != nil {
		t.Fatalf("NetworkPolicy %s podSelector: %v", policy.Name, err)
	}
	if !selector.Matches(pods) || selector.Matches(other) {
		t.Errorf("NetworkPolicy %s selects %v, want the pods %v and not %v", policy.Name, selector, pods, other)
	}
	if !slices.Contains(policy.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
		t.Errorf("NetworkPolicy %s policyTypes = %q, want Ingress among them", policy.Name, policy.Spec.PolicyTypes)
	}
}

// TestDeployGuideManifests decodes, strictly, every Kubernetes manifest
// among the YAML examples of the deployment guide, and checks that a
// NetworkPolicy there selects the gateway's pods, so that a reader who
// copies one gets a valid object that applies to the gateway.
func TestDeployGuideManifests(t *testing.T) {
	gatewayPods := labels.Set(find[*appsv1.Deployment](t, renderBase(t), gatewayName).Spec.Template.Labels)
	guide := string(readFile(t, deployGuidePath))
	manifests := 0
	for _, block := range strings.Split(guide, "```yaml\n")[1:] {
		block, _, _ = strings.Cut(block, "```")
		if !strings.Contains(block, "apiVersion:") {
			continue // a part of the gateway's configuration
		}
		manifests++
		object, _, err := strictDecoder.Decode([]byte(block), nil, nil)
		if err != nil {
			t.Errorf("%s: manifest\n%s: %v", deployGuidePath, block, err)
			continue
		}
		if policy, ok := object.(*networkingv1.NetworkPolicy); ok {
			checkPolicySelects(t, policy, gatewayPods, nil)
		}
	}
	if manifests == 0 {
		t.Errorf("%s has no YAML example with apiVersion; this test expects the NetworkPolicy for Prometheus", deployGuidePath)
	}
}

// TestGatewayReachesPluginsByDNS checks that the engine's backend is the
// plugin's headless Service, resolved through DNS, so that every ready
// plugin pod is a replica.
func TestGatewayReachesPluginsByDNS(t *testing.T) {
	objects := renderBase(t)
	cfg := gatewayConfig(t, objects)
	service := find[*corev1.Service](t, objects, pluginName)
	deployment := find[*appsv1.Deployment](t, objects, pluginName)
	plugin := container(t, deployment, pluginContainer)

	// A headless Service of the plugin's pods.
	if service.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("Service %s clusterIP = %q, want None: a virtual IP would hide the pods from the gateway's balancing", service.Name, service.Spec.ClusterIP)
	}
	if !labels.SelectorFromSet(service.Spec.Selector).Matches(labels.Set(deployment.Spec.Template.Labels)) {
		t.Errorf("Service %s selects %v, which does not match the plugin's pods %v", service.Name, service.Spec.Selector, deployment.Spec.Template.Labels)
	}
	if len(service.Spec.Ports) != 1 {
		t.Fatalf("Service %s has %d ports, want 1", service.Name, len(service.Spec.Ports))
	}
	servicePort := int(service.Spec.Ports[0].Port)

	// The plugin listens on that port on every interface.
	address := flagValue(t, plugin.Args, "--address")
	pluginHost, pluginPort := splitHostPort(t, address)
	if pluginPort != servicePort || pluginPort != containerPort(t, plugin, "sse") {
		t.Errorf("plugin listens on port %d; Service port %d and container port sse must be the same", pluginPort, servicePort)
	}
	if pluginHost != "0.0.0.0" && pluginHost != "" {
		t.Errorf("plugin --address %s listens on %s only, out of the gateway's reach", address, pluginHost)
	}

	// One engine whose backend is the Service's DNS name in the rendered
	// namespace.
	wantHost := fmt.Sprintf("%s.%s.svc.%s", service.Name, service.Namespace, clusterDomain)
	found := false
	for _, name := range cfg.EngineNames() {
		for i, backend := range cfg.Engine(name).Backends {
			host, port := splitHostPort(t, backend.Address)
			if host != wantHost {
				continue
			}
			found = true
			if !backend.DNS {
				t.Errorf("engines.%s.backends[%d] is the headless Service without dns: true, so only one pod would be used", name, i)
			}
			if port != servicePort {
				t.Errorf("engines.%s.backends[%d] port = %d, want the Service's %d", name, i, port, servicePort)
			}
		}
	}
	if !found {
		t.Errorf("no backend in %s reaches %s; the namespace in the address must be the kustomization's", configKey, wantHost)
	}

	checkPodSecurity(t, deployment, plugin)
	checkResources(t, plugin)
}

// TestExampleOverlay renders the example overlay with a fresh certificate
// set where its secretGenerator expects one, and loads the ConfigMap's
// configuration with the Secret's files as the listeners' folder: the
// gateway's complete validation, certificates included.
func TestExampleOverlay(t *testing.T) {
	// Copy the kubernetes folder into memory, and add the certificates.
	fsys := filesys.MakeFsInMemory()
	root := filepath.Join(repoRoot, kubernetesDir)
	err := filepath.WalkDir(root, func(file string, entry fs.DirEntry, err error) error {
		if err != nil || entry.IsDir() {
			return err
		}
		relative, err := filepath.Rel(root, file)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		return fsys.WriteFile(path.Join("/kubernetes", filepath.ToSlash(relative)), data)
	})
	if err != nil {
		t.Fatal(err)
	}
	set, err := tlsutil.WriteSet(t.TempDir(), []string{"ssegw.example.com"}, tlsutil.SetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gatewayFiles := []string{tlsutil.RootCertFile, tlsutil.ServerCertFile, tlsutil.ServerKeyFile}
	for _, name := range gatewayFiles {
		data, err := os.ReadFile(filepath.Join(set.GatewayDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := fsys.WriteFile(path.Join("/kubernetes/example/certs/gateway", name), data); err != nil {
			t.Fatal(err)
		}
	}

	objects := render(t, fsys, "/kubernetes/example")

	// The Secret holds the folder's files under their own names.
	secret := find[*corev1.Secret](t, objects, tlsSecretName)
	var keys []string
	for key := range secret.Data {
		keys = append(keys, key)
	}
	slices.Sort(keys)
	slices.Sort(gatewayFiles)
	if !slices.Equal(keys, gatewayFiles) {
		t.Fatalf("Secret %s keys = %q, want %q, the layout of tls.dir", tlsSecretName, keys, gatewayFiles)
	}

	// The configuration loads with those files as every listener's folder.
	tlsDir := t.TempDir()
	for key, data := range secret.Data {
		if err := os.WriteFile(filepath.Join(tlsDir, key), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	data := []byte(find[*corev1.ConfigMap](t, objects, configMapName).Data[configKey])
	if _, err := config.Parse(data, listenerTLSEnv(readConfigShape(t, data), tlsDir)); err != nil {
		t.Errorf("%s with the Secret's certificates:\n%v", configKey, err)
	}

	// The overlay's image replaces the base's in every container.
	for _, name := range []string{gatewayName, pluginName} {
		for _, c := range find[*appsv1.Deployment](t, objects, name).Spec.Template.Spec.Containers {
			if !strings.Contains(c.Image, "/") || !strings.Contains(c.Image, ":") {
				t.Errorf("deployment %s container %s image = %q, want the overlay's registry name and tag", name, c.Name, c.Image)
			}
		}
	}
}

// checkPodSecurity checks that the container runs as a non-root user,
// with a read-only root filesystem and no privileges.
func checkPodSecurity(t *testing.T, deployment *appsv1.Deployment, c *corev1.Container) {
	t.Helper()
	pod := deployment.Spec.Template.Spec.SecurityContext
	if pod == nil || pod.RunAsNonRoot == nil || !*pod.RunAsNonRoot || pod.RunAsUser == nil || *pod.RunAsUser == 0 {
		t.Errorf("deployment %s pod securityContext = %+v, want runAsNonRoot and a runAsUser other than 0", deployment.Name, pod)
	}
	if pod != nil && (pod.SeccompProfile == nil || pod.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault) {
		t.Errorf("deployment %s seccompProfile = %+v, want RuntimeDefault", deployment.Name, pod.SeccompProfile)
	}
	if deployment.Spec.Template.Spec.AutomountServiceAccountToken == nil || *deployment.Spec.Template.Spec.AutomountServiceAccountToken {
		t.Errorf("deployment %s mounts a service account token, which ssegw never uses", deployment.Name)
	}
	security := c.SecurityContext
	switch {
	case security == nil:
		t.Errorf("container %s has no securityContext", c.Name)
	case security.ReadOnlyRootFilesystem == nil || !*security.ReadOnlyRootFilesystem:
		t.Errorf("container %s readOnlyRootFilesystem = %v, want true", c.Name, security.ReadOnlyRootFilesystem)
	case security.AllowPrivilegeEscalation == nil || *security.AllowPrivilegeEscalation:
		t.Errorf("container %s allowPrivilegeEscalation = %v, want false", c.Name, security.AllowPrivilegeEscalation)
	case security.Capabilities == nil || !slices.Contains(security.Capabilities.Drop, "ALL"):
		t.Errorf("container %s capabilities = %+v, want drop ALL", c.Name, security.Capabilities)
	}
}

// checkResources checks that the container requests CPU and memory and
// has a memory limit.
func checkResources(t *testing.T, c *corev1.Container) {
	t.Helper()
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if quantity, ok := c.Resources.Requests[name]; !ok || quantity.IsZero() {
			t.Errorf("container %s requests no %s", c.Name, name)
		}
	}
	if quantity, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok || quantity.IsZero() {
		t.Errorf("container %s has no memory limit", c.Name)
	}
}

// checkGoMemoryLimit checks that GOMEMLIMIT, when set, is below the
// container's memory limit, so that Go's garbage collector works harder
// before the kernel ends the container.
func checkGoMemoryLimit(t *testing.T, c *corev1.Container) {
	t.Helper()
	for _, env := range c.Env {
		if env.Name != "GOMEMLIMIT" {
			continue
		}
		// GOMEMLIMIT's units (KiB, MiB, GiB) are Kubernetes quantities
		// without the trailing B.
		goLimit, err := resource.ParseQuantity(strings.TrimSuffix(env.Value, "B"))
		if err != nil {
			t.Fatalf("container %s GOMEMLIMIT = %q: %v", c.Name, env.Value, err)
		}
		limit := c.Resources.Limits[corev1.ResourceMemory]
		if goLimit.Cmp(limit) >= 0 {
			t.Errorf("container %s GOMEMLIMIT = %s, want less than the memory limit %s", c.Name, env.Value, limit.String())
		}
		return
	}
}
