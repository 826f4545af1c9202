# Two commands set everything up on a fresh machine that has only python3:
#   make run    the main job on the embedded default (creates .venv when missing)
#   make test   the test suite                        (creates .venv when missing)
PY       ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.teachloop-installed
PRESET   ?= quickstart
OUT      ?= runs/$(PRESET)
PYTEST_ARGS ?=

export HF_HUB_OFFLINE = 1
# llama-cpp-python compiles from source; a -march=native build crashed in llama_decode on
# this machine class, the portable build works (pip caches the wheel after the first build).
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF
export TRANSFORMERS_OFFLINE = 1
# torch's OpenMP threads spin while waiting; on a busy 2-core box that made generation 5x slower
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup run test bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# constraints.txt pins torch to the CPU wheel so no dependency pulls another build
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# A second `make run` resumes (or re-reports) the run in $(OUT) instead of failing.
run: $(STAMP)
	$(BIN)/teachloop run --preset $(PRESET) --out $(OUT) $$([ -f $(OUT)/config.yaml ] && echo --resume)

# pytest exits 5 when it collected no test; that is not a failure of the suite.
test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS) || [ $$? -eq 5 ]

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
