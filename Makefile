# The two entry points: `make demo` (the embedded sandbox) and `make test` (the whole suite).
# Both create/use .venv and install what they need (PyPI into .venv, Debian packages when missing).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTEST_ARGS ?=
APT_PACKAGES := prometheus prometheus-alertmanager

.PHONY: test demo venv system-deps crds lint clean

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

# The suite includes the import-linter contract and `modelwarden crds --check`.
test: venv system-deps
	$(VENV)/bin/pytest $(PYTEST_ARGS)

demo: venv system-deps
	$(VENV)/bin/modelwarden demo

crds: venv
	$(VENV)/bin/modelwarden crds --write

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info operator/*.egg-info
