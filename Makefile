# The two commands of the README: `make tour` (the lessons on the embedded sandbox) and `make test`.
# Everything runs in the project's own virtual environment (.venv), so a system Python that refuses
# `pip install` (PEP 668: Debian 12, Ubuntu 24.04), pyenv and conda all work the same way.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp

.PHONY: install tour test lint typecheck bench lab clean

$(VPY):
	@$(PY) -m venv $(VENV) || { echo "error: '$(PY) -m venv' failed; on Debian/Ubuntu run: apt-get install python3-venv" >&2; exit 1; }

$(STAMP): pyproject.toml setup.py | $(VPY)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

tour: $(STAMP)
	$(VPY) -m labkit.cli tour --out site

lab: $(STAMP)
	$(VPY) -m labkit.cli lab

lint: $(STAMP)
	$(VPY) -m ruff check labkit tests benchmarks
	$(VPY) -m mypy
	$(VENV)/bin/lint-imports

test: $(STAMP)
	$(VPY) -m ruff check labkit tests benchmarks
	$(VPY) -m mypy
	$(VENV)/bin/lint-imports
	$(VPY) -m pytest -p no:cacheprovider -rfE

bench: $(STAMP)
	$(VPY) benchmarks/run.py

clean:
	rm -rf site $(VENV) build *.egg-info
