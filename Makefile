# accelbench: `make demo` (install + smoke suite end to end on CPU) and `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUITE ?= smoke
OUT ?= runs/$(SUITE)
ARGS ?=

.PHONY: install lint test test-fast demo generate score report publish bench clean help

help:
	@echo "make install                  create $(VENV) with the pinned, tested packages (constraints.txt)"
	@echo "make test                     install if needed, run the test suite (CPU, offline)"
	@echo "make test-fast                the tests not marked slow (a quick check while developing)"
	@echo "make lint                     ruff over the whole tree (configured in pyproject.toml)"
	@echo "make demo                     install; generate, gate, score the smoke suite + a demo submission on CPU"
	@echo "make generate SUITE=.. OUT=.. render a suite into a dataset folder (ARGS='--device cuda ...')"
	@echo "make score OUT=..             CLIP scores, fidelity and the report, from the dataset alone"
	@echo "make report OUT=..            rebuild OUT/report from stored scores"
	@echo "make publish OUT=.. REPO=..   push OUT to the Hugging Face Hub (ARGS='--dry-run DIR' to stage only)"
	@echo "make bench                    GPU benchmarks (see bench/README.md)"

install: $(VENV)/.installed

# Reinstall when the dependency list or the pins change.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile -c constraints.txt -e '.[test]'
	# Byte-compile on every core (pip compiles on one): 84 s instead of 99 s for the whole install on 2 cores.
	# Like pip, skip what does not compile here (torch ships a file of Python 3.12 syntax).
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib >/dev/null || true
	touch $@

# Two pytest workers, a test file each at a time: a file's module fixtures (a generated dataset) are built once.
TEST_WORKERS ?= 2

test: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=10

test-fast: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow" --durations=5

lint: install
	$(BIN)/ruff check .

DEMO_SUBMISSION := examples/demo-submission

demo: install
	$(BIN)/accelbench generate --suite smoke --out $(OUT) --device cpu --submission $(DEMO_SUBMISSION)
	$(BIN)/accelbench score $(OUT)
	$(BIN)/accelbench leaderboard $(OUT)
	@echo "report: $(OUT)/report/report.md"
	@echo "report, as a web page: $(OUT)/report/index.html (open it from disk; it needs no server)"

generate: install
	$(BIN)/accelbench generate --suite $(SUITE) --out $(OUT) $(ARGS)

score: install
	$(BIN)/accelbench score $(OUT) $(ARGS)

report: install
	$(BIN)/accelbench report $(OUT)

publish: install
	@test -n "$(REPO)" || { echo "usage: make publish OUT=DIR REPO=ORG/NAME [ARGS='--private']"; exit 2; }
	$(BIN)/accelbench publish $(OUT) --repo-id $(REPO) $(ARGS)

bench: install
	$(BIN)/python bench/bench_generate.py $(ARGS)

clean:
	rm -rf runs build *.egg-info .pytest_cache
