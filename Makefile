# The two commands of the README: `make tour` (the lessons on the embedded sandbox) and `make test`.
PY ?= python3
STAMP := .venv-stamp

.PHONY: install tour test lint bench lab clean

$(STAMP): pyproject.toml
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

tour: $(STAMP)
	labkit tour --out site

lab: $(STAMP)
	labkit lab

test: $(STAMP)
	$(PY) -m ruff check labkit tests benchmarks
	$(PY) -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(PY) benchmarks/run.py

clean:
	rm -rf site $(STAMP) build *.egg-info
