# The two commands of the README: `make tour` (the lessons on the embedded sandbox) and `make test`.
PY ?= python3
STAMP := .venv-stamp

.PHONY: install tour test lint bench lab clean

$(STAMP): pyproject.toml
	$(PY) -m pip install --quiet -e ".[dev]"
	@# pyenv installs need a rehash before new console scripts (labkit, kubectl) are on PATH
	@command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
	@touch $(STAMP)

install: $(STAMP)

tour: $(STAMP)
	$(PY) -m labkit.cli tour --out site

lab: $(STAMP)
	$(PY) -m labkit.cli lab

test: $(STAMP)
	$(PY) -m ruff check labkit tests benchmarks
	$(PY) -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(PY) benchmarks/run.py

clean:
	rm -rf site $(STAMP) build *.egg-info
