# User entry points. Every target that needs Python depends on `install`, so on a fresh
# machine `make test` or `make bench` alone sets everything up.
PYTHON ?= python3
VENV ?= .venv
# Numerics depend on the torch version: keep it pinned; override with `make TORCH_VERSION=...`.
TORCH_VERSION ?= 2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-torch-$(TORCH_VERSION)

.PHONY: install test test-fast fuzz adversarial bench bench-full check report lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==$(TORCH_VERSION)"
	$(BIN)/python -m pip install -q -e ".[bench,dev,dask]" "torch==$(TORCH_VERSION)"
# The published package (bento-sc 0.0.8), measured as itself: its loss module needs torch
# only, so its unrelated heavy dependencies are not installed.
	$(BIN)/python -m pip install -q --no-deps bento-sc==0.0.8
# The loss's fused float32 kernel, built by torch for this CPU (about half a minute; without
# a C++ compiler the loss uses its pure-torch screen and says so).
	@$(BIN)/python -c "from ztbench.loss import fused; print('ztbench.loss.fused:', fused.status().reason)"
	@rm -f $(VENV)/.installed-torch-*
	@touch $@

# pytest exits 5 when it collects no test: that must never look green.
test: install
	@$(BIN)/python -m pytest --ignore=tests/bench; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# Quick feedback while editing: everything but the tests marked slow (not what CI runs).
test-fast: install
	@$(BIN)/python -m pytest --ignore=tests/bench -m "not slow"; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-fast: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# The fuzz harness (tests/commands/test_fuzz.py) with a longer budget than make test's: seeded, so
# a failure reproduces; raise FUZZ_EXAMPLES for longer runs.
FUZZ_EXAMPLES ?= 500
fuzz: install
	ZTBENCH_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest tests/commands/test_fuzz.py \
		--hypothesis-show-statistics

# The adversarial search for the shipped loss's worst float64 points with a fresh seed and a
# larger budget than make test's (which runs three fixed seeds): the seed is printed, so a
# failure reproduces with ZTBENCH_ADVERSARIAL_SEEDS=<seed>.
ADVERSARIAL_ROUNDS ?= 5
ADVERSARIAL_RESTARTS ?= 128
adversarial: install
	@seed=$${ZTBENCH_ADVERSARIAL_SEEDS:-$$(date +%s)}; echo "adversarial search, seed $$seed"; \
	ZTBENCH_ADVERSARIAL_SEEDS="$$seed" ZTBENCH_ADVERSARIAL_ROUNDS=$(ADVERSARIAL_ROUNDS) \
	ZTBENCH_ADVERSARIAL_RESTARTS=$(ADVERSARIAL_RESTARTS) $(BIN)/python -m pytest \
		tests/measure/test_adversarial.py -k test_search_holds -v

# The CI gate: rerun the quick suite and compare with results/baseline/quick.json.
check: install
	$(BIN)/ztbench check suites/quick.toml

lint: install
	$(BIN)/ruff check ztbench tests

# Accuracy, throughput, impact and the report on the default suite (results/default/REPORT.md).
# Each kernel is timed once, by the throughput stage; its timings are also written in
# pytest-benchmark's format (results/default/pytest-benchmark.json: compare two runs with
# `pytest-benchmark compare A.json B.json`). `pytest tests/bench --benchmark-enable` times the
# kernels with pytest-benchmark itself, compiled ones too.
bench: install
	$(BIN)/ztbench bench suites/default.toml -o results/default

# The full suite: the default's coverage with about ten times the points, the whole-domain
# inputs and the forward pass timed too, at two sizes. Rerun after an interruption: the
# references and fits already computed are cached and reused.
bench-full: install
	$(BIN)/ztbench bench suites/full.toml -o results/full --throughput-sizes 1e5 \
		--throughput-inputs realistic,log-uniform --throughput-passes forward,forward+backward

report: install
	$(BIN)/ztbench report results/default

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .benchmarks build *.egg-info
