# The two commands a newcomer needs: `make demo` and `make test`. Both create .venv and install first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install demo test test-slow lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# constraints.txt pins every transitive version that CI was proven with (no resolver backtracking).
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## demo: seed an embedded Chroma store, back it up into ./aibackup-repo, restore into embedded Qdrant, prove it
demo: install
	$(BIN)/python -m aibackup.demo

## test: every test but the `slow` ones, then all of them again against encrypted repositories; the fixtures
## start the moto S3/KMS server and `chroma run` themselves
test: install
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)
	AIBACKUP_TEST_ENCRYPTED=1 $(BIN)/python -m pytest -m "not slow" -p no:cacheprovider $(PYTEST_ARGS)

test-slow: install
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check aibackup connectors manifests tests benchmarks
	$(BIN)/ruff format --check aibackup connectors manifests tests benchmarks
	$(BIN)/mypy aibackup  # connectors and manifests too: aibackup/connectors, aibackup/manifests link to them

## bench: every benchmark in one run (seeds cached stores under benchmarks/.cache first), then docs/benchmarks.md
BENCH_ARGS ?= --rows 100000 --dim 384 --repeats 5
bench: install
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,bench]'
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) aibackup-repo aibackup-restore aibackup-demo .pytest_cache
