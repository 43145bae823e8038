// Package deploytest checks keywarden's deployment files: the container
// image (built with podman, exported and run), the Kubernetes manifests and
// Kustomize overlays (parsed strictly into the Kubernetes API types), the Helm
// chart (helm lint and helm template for every documented values example),
// the security settings of every rendered workload, the keywarden configs
// they carry, and the Prometheus alert rules (promtool).
//
// It is a module of its own so that the Kubernetes and Kustomize libraries
// stay out of keywarden's go.mod. Run it with `make deploy-test`, or
// `cd deploy/test && go test ./...`. Under CI=true a tool that cannot be
// installed (podman, helm, promtool) fails the test instead of skipping it.
package deploytest
