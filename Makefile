# keywarden — build, run and test. `make run` and `make test` are the two set-up commands.
GO        ?= go
BIN       := bin/keywarden
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
DATE      ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS   := -s -w -X github.com/keywarden/keywarden/internal/version.Version=$(VERSION) \
             -X github.com/keywarden/keywarden/internal/version.Commit=$(COMMIT) \
             -X github.com/keywarden/keywarden/internal/version.Date=$(DATE)
TESTFLAGS ?= -race -count=1 -timeout 20m
# TAGS: extra build tags, e.g. TAGS=keywarden_no_gcp,keywarden_no_vault for a
# binary without the drivers it does not use (providers/all; docs/benchmarks.md).
TAGS      ?=
BUILDTAGS := timetzdata$(TAGS:%=,%)
# Fuzzing: `make fuzz` runs every fuzz target for FUZZTIME; `make test` runs
# each for FUZZTIME_SHORT. FUZZPAR is the number of fuzzing workers.
# FUZZTIME_SHORT is a count of executions, not a duration: Go 1.26's fuzz
# coordinator can report a bare "context deadline exceeded" failure when a
# duration -fuzztime ends while a worker is mid-call on a loaded machine
# (golang/go#75804, fixed in Go 1.27); a count has no deadline to race.
FUZZTIME       ?= 2m
FUZZTIME_SHORT ?= 50000x
FUZZPAR        ?= 2

.PHONY: prometheus pushgateway build run test test-go fuzz fuzz-short e2e lint bench bench-load clean vaultserver image image-test deploy-test

## build: a static, stamped binary in bin/
build:
	CGO_ENABLED=0 $(GO) build -trimpath -tags '$(BUILDTAGS)' -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/keywarden

## run: the sidecar on the embedded default (a local file store in ./.keywarden, created on first
## run with a placeholder key): proxy on 127.0.0.1:8787, /healthz /readyz /metrics on 127.0.0.1:9787
run: build
	$(BIN) sidecar

## test: every test: lint, the main module under -race (starts moto, the Vault core and the fake APIs itself),
## every fuzz target briefly (FUZZTIME_SHORT each)
test: lint test-go fuzz-short deploy-test

# One real Vault core (internal/vaultserver, its own Go module) serves every
# package's tests; its first build downloads ~4 GB of modules and takes ~8 min.
test-go: vaultserver prometheus pushgateway
	bin/vaultserver -exec -- $(GO) test $(TESTFLAGS) ./...
	# The proxy's raw socket calls are made only without -race (see internal/proxy/rawio_race.go).
	$(GO) test -count=1 -timeout 20m ./internal/proxy/...

## prometheus: the real Prometheus server the revoke-gate tests start (Debian's package, as root;
## installed once here so that parallel test packages never run apt-get at the same time)
prometheus:
	scripts/install-prometheus.sh >/dev/null

## pushgateway: the real Prometheus Pushgateway the `rotate --push-gateway` tests start (Debian's
## prometheus-pushgateway, as root; installed once here, like prometheus)
pushgateway:
	scripts/install-pushgateway.sh >/dev/null

## fuzz: every native Go fuzz target of the module (each func FuzzXxx, found by `go test -list`
## in each package whose tests hold one) for FUZZTIME each, e.g. make fuzz FUZZTIME=10m.
## New inputs that fail are written to the package's testdata/fuzz: commit them with the fix.
fuzz:
	@set -e; \
	pkgs="$$($(GO) list -f '{{.ImportPath}} {{.Dir}}' ./... | while read -r p d; do \
	  if grep -qs '^func Fuzz' "$$d"/*_test.go; then echo "$$p"; fi; done)"; \
	n=0; for p in $$pkgs; do \
	  for f in $$($(GO) test -list '^Fuzz' "$$p" | grep '^Fuzz' || true); do \
	    echo "== fuzz $$p $$f for $(FUZZTIME)"; n=$$((n+1)); \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -parallel $(FUZZPAR) "$$p"; \
	  done; \
	done; \
	if [ "$$n" -eq 0 ]; then echo "fuzz: no fuzz targets found"; exit 1; fi; \
	echo "fuzz: $$n targets ran for $(FUZZTIME) each"

## fuzz-short: every fuzz target for FUZZTIME_SHORT (part of make test)
fuzz-short:
	@$(MAKE) --no-print-directory fuzz FUZZTIME=$(FUZZTIME_SHORT)

## e2e: zero-downtime rotation under load (sidecar and library client, 20 rotations by the real
## rotator) on every store: file, AWS (moto), GCP (gcpsmfake), Vault; logs each rotation's propagation;
## and keyless (wif://) under load across 20+ token refreshes and an early revocation
e2e: vaultserver
	bin/vaultserver -exec -- $(GO) test $(TESTFLAGS) -v -run '^(TestZeroDowntime|TestKeylessUnderLoad)$$' ./internal/e2e/ ./providers/federation/

## vaultserver: build the real Vault test server (separate module, kept out of go.mod)
vaultserver:
	cd internal/vaultserver && $(GO) build -o ../../bin/vaultserver .

## image: the container image with podman (FROM scratch around a static binary; installs podman if missing)
image:
	scripts/image.sh

## image-test: build, inspect, export and run the image
image-test:
	cd deploy/test && $(GO) test -mod=mod -count=1 -run 'TestImage|TestDockerfile' .

## deploy-test: image, manifests (strict parse), Kustomize overlays, Helm lint/template, security settings, alert rules
deploy-test:
	cd deploy/test && $(GO) vet -mod=mod ./... && $(GO) test -mod=mod -count=1 ./...

## lint: go vet and a gofmt check
lint:
	$(GO) vet ./...
	$(GO) vet -tags keywarden_no_aws,keywarden_no_gcp,keywarden_no_vault ./providers/... ./cmd/...
	cd internal/vaultserver && $(GO) vet ./...
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## bench: Go benchmarks (ns/op, allocs/op)
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

## bench-load: the sidecar against nginx and a direct call with wrk, side by side (docs/benchmarks.md)
bench-load:
	bash bench/run.sh

clean:
	rm -rf bin .keywarden
	$(GO) clean -testcache
