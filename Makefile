# Every target sets up what it needs: a fresh clone needs only `make serve` or `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEFAULT_BUNDLE := models/minilm-zero-shot-bi

.PHONY: venv serve test test-fast system-deps console-screenshot experiment-hd bench infinity-venv gpu-prepare gpu-check teacher-gpu-prepare teacher-gpu-dry-run teacher-gpu-collect lint format audit default-bundle clean

# llama.cpp (the /explain teacher) for AVX2, without AMX: a native build on a CPU that reports AMX
# crashes at its first evaluation where the kernel does not grant AMX tiles (seen on a VM here), and a
# wheel built natively on one machine may not run on the next. The same flags are in the Dockerfile.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: the CPU build on local disk, never an unpinned multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/pip install -q -e '.[cpu,distill,dev]'
	touch $(STAMP)

venv: $(STAMP)

$(DEFAULT_BUNDLE)/bundle.json: | $(STAMP)
	$(BIN)/relevance student build-default --out $(DEFAULT_BUNDLE)

default-bundle: $(DEFAULT_BUNDLE)/bundle.json

serve: $(STAMP) $(DEFAULT_BUNDLE)/bundle.json
	$(BIN)/relevance serve

# Everything. A test that needs Redis (127.0.0.1:6379) or the local LLM is skipped, with the reason, where
# that is missing; CI sets RELEVANCE_TEST_STRICT=1 so there a missing one fails the run instead.
test: $(STAMP) $(DEFAULT_BUNDLE)/bundle.json
	$(BIN)/python -m pytest -q

# The unit tests only (no server, no model training, no Redis, no LLM): under a minute.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not redis and not llm and not browser and not haproxy"

# What some tests run besides Python, from Debian's packages: chromium and chromedriver (the ops console's
# browser test; never a browser downloaded at run time) and HAProxy (the replicas scenario). Needs root;
# CI runs it before make test. Without them, those tests are skipped with the reason.
SYSTEM_DEPS := /usr/bin/chromium /usr/bin/chromedriver /usr/sbin/haproxy
system-deps:
	@if ls $(SYSTEM_DEPS) >/dev/null 2>&1; then echo "chromium, chromedriver and haproxy are installed"; \
	elif [ "$$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver haproxy; \
	else echo "make system-deps: run as root, or: sudo apt-get install chromium chromium-driver haproxy" >&2; exit 1; fi

# docs/console.png: the screenshot the browser test of the ops console takes, with an explanation open.
console-screenshot: $(STAMP) system-deps
	RELEVANCE_CONSOLE_SCREENSHOT=docs/console.png $(BIN)/python -m pytest -q tests/service/test_console_browser.py -k ranks_explains

# The Home Depot distillation chain (distill/experiments/hd.py), resumable: each step is skipped when its
# output exists. BUDGET=smoke runs it on the bundled ESCI split in a few steps (a test runs that too).
BUDGET ?= full
experiment-hd: $(STAMP) $(DEFAULT_BUNDLE)/bundle.json
	$(BIN)/relevance experiment hd --budget $(BUDGET)

# Infinity (the side-by-side baseline of `make bench`) pins old dependencies: its own venv, never .venv.
INFINITY_VENV := .venv-infinity
$(INFINITY_VENV)/bin/infinity_emb:
	$(PYTHON) -m venv $(INFINITY_VENV)
	$(INFINITY_VENV)/bin/pip install -q torch==2.13.0
	$(INFINITY_VENV)/bin/pip install -q "infinity-emb[server,optimum,torch]==0.0.78"

infinity-venv: $(INFINITY_VENV)/bin/infinity_emb

bench: $(STAMP) $(DEFAULT_BUNDLE)/bundle.json $(INFINITY_VENV)/bin/infinity_emb
	$(BIN)/relevance bench $(BENCH_ARGS)

# The GPU check (issue 15; docs/BENCHMARKS.md, "GPU (prepared, not yet run)"). gpu-prepare, here: fp16
# bundles, wheels and onnxruntime-gpu into .gpu-carry/ as parts a device call can carry. gpu-check: the
# one-shot script (on the GPU machine loadtest/gpu/on_device.sh runs it); GPU_ARGS=--dry-run on a CPU.
GPU_OUT ?= reports/gpu-check
gpu-prepare: $(STAMP) $(DEFAULT_BUNDLE)/bundle.json
	$(BIN)/python -m loadtest.gpu.prepare

gpu-check:
	$(if $(wildcard $(BIN)/python),$(BIN)/python,python3) -m loadtest.gpu.run --payload .gpu-carry/payload --out $(GPU_OUT) $(GPU_ARGS)

# The teacher GPU recipe (issue 16; docs/TEACHER.md, "The GPU recipe"). teacher-gpu-prepare: SFT
# records, pairs, transfer set, GGUF and wheels into .teacher-gpu-carry/ as parts a device call can carry
# (it prints the calls); teacher-gpu-collect: the files brought back (TEACHER_GPU_RESULTS) → runs/teacher-gpu.
# teacher-gpu-dry-run: the whole recipe on this CPU on a slice of bundled ESCI (100 train + 100 dev pairs, 2 steps).
TEACHER_GPU_RESULTS ?= reports/teacher-gpu/results
TEACHER_GPU_DRY := .teacher-gpu-dry
teacher-gpu-prepare: $(STAMP)
	$(BIN)/python -m distill.teacher.gpu.prepare $(TEACHER_GPU_ARGS)

teacher-gpu-collect: $(STAMP)
	$(BIN)/python -m distill.teacher.gpu.collect --results $(TEACHER_GPU_RESULTS) --into runs/teacher-gpu

teacher-gpu-dry-run: $(STAMP)
	$(BIN)/python -m distill.teacher.gpu.prepare --carry-dir $(TEACHER_GPU_DRY)/carry --train bundled:train --dev bundled:dev --slice 100 --per-query 1 --random-per-query 0
	rm -rf $(TEACHER_GPU_DRY)/results && DRY_RUN=1 PYTHON=$(BIN)/python CARRY_DIR=$(TEACHER_GPU_DRY)/carry \
	  RELEVANCE_GPU_DIR=$(TEACHER_GPU_DRY)/device OUT=$(TEACHER_GPU_DRY)/results bash distill/teacher/gpu/on_device.sh
	$(BIN)/python -m distill.teacher.gpu.collect --results $(TEACHER_GPU_DRY)/results --into $(TEACHER_GPU_DRY)/collected

# Dependency audit of the installed environment; fails on any finding not listed, with its reason,
# in audit-ignore.txt. Dependencies the vulnerability service cannot look up are listed as skipped.
audit: $(STAMP)
	$(BIN)/pip-audit --skip-editable --progress-spinner off \
	  $$(sed -n 's/^\([A-Za-z][A-Za-z0-9-]*\) .*/--ignore-vuln \1/p' audit-ignore.txt)

LINTED := core teacher service distill loadtest tests

lint: $(STAMP)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/ruff check $(LINTED)

format: $(STAMP)
	$(BIN)/ruff format $(LINTED)
	$(BIN)/ruff check --fix $(LINTED)

clean:
	rm -rf $(VENV) $(DEFAULT_BUNDLE)
