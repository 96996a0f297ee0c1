// Package deploy contains the tests of ssegw's deployment files: the
// Kubernetes manifests, the compose file and its Dockerfile, and the
// systemd unit. The tests need no container engine, cluster or service
// manager. They render the manifests with kustomize and decode them with
// the Kubernetes API types, and they load every gateway configuration
// among the files with ssegw's own config package.
//
// It is a module of its own, so that kustomize and the Kubernetes API
// stay out of the gateway's dependencies. Run its tests with
// go -C deploy test ./...
package deploy
