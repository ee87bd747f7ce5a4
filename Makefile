# `make demo` and `make test` work on a fresh machine: each sets up what it needs first.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# `make demo` runs rift_core/configs/demo.yaml (tiny at one seed on fewer evaluation problems, no KTO) unless given a
# PROFILE
DEMO_PROFILE := $(or $(PROFILE),demo)
PROFILE ?= tiny
# partitions side by side, one torch thread each (rift_dagster.demo --jobs): one per core for the CPU profiles, one
# at a time for any other (a GPU profile's steps each want the whole device)
JOBS    ?= $(if $(filter tiny smoke demo,$(PROFILE)),$(shell nproc),1)
export DAGSTER_HOME := $(CURDIR)/.dagster_home

.PHONY: setup browser test demo results lr-sweep report ui sql bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first: the CPU wheel; a plain resolve can pull a multi-GB CUDA build
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# Headless Debian chromium for the web-UI test (never `playwright install`: no browser downloads here)
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

test: setup browser
	$(PY) -m pytest -q

# the whole graph at one replicate seed, in minutes on a fresh machine
demo: setup
	$(PY) -m rift_dagster.demo --profile $(DEMO_PROFILE) --seeds 0 --jobs $(JOBS)
	@$(if $(filter demo,$(DEMO_PROFILE)),echo "Tiny's results at 3 seeds with their spread and RIFT's intervals:" \
		"benchmarks/results/tiny.md; regenerate them with: make results  (53 min here)",true)

# every replicate seed, Tables 2/3 with their spread and RIFT's intervals, and the collapse experiment (resumable).
# One torch thread per step (--jobs sets it): the base policy's weights depend on the thread count, so this pins
# the policy benchmarks/results/tiny.md was measured with
results: setup
	$(PY) -m rift_dagster.demo --profile $(PROFILE) --protocols graph,collapse --jobs $(JOBS)

# the learning-rate sweep on the validation split (one seed); write the chosen rates into the profile
lr-sweep: setup
	$(PY) -m rift_dagster.demo --profile $(PROFILE) --protocols lr_sweep --seeds 0 --jobs $(JOBS)

# every protocol but the sweep, and data/<profile>/report/README.md; smoke runs its steps in this process
# (seconds, not minutes)
REPORT_PROTOCOLS := graph,collapse,reward_schemes,k,second_round,rounds,efficiency,report
report: setup
	$(PY) -m rift_dagster.demo --profile $(PROFILE) --protocols $(REPORT_PROTOCOLS) \
		$(if $(filter smoke,$(PROFILE)),--in-process,--jobs $(JOBS))

ui: setup
	RIFT_PROFILE=$(PROFILE) $(VENV)/bin/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

sql: setup
	$(PY) -m rift_dagster.sql --profile $(PROFILE)

bench: setup
	$(PY) benchmarks/bench_memory.py
	$(PY) benchmarks/bench_labelling.py
	$(PY) benchmarks/bench_grading.py
	$(PY) benchmarks/bench_generation.py
	$(PY) benchmarks/bench_tiny_profile.py

# Wheels (1.8 MB, pure Python) that benchmarks/gpu_check.sh installs offline on a GPU machine without network; copy gpu_wheels/ along
.PHONY: gpu-wheels
gpu-wheels:
	bash benchmarks/gpu_check.sh --download-wheels

clean:
	rm -rf data/tiny data/smoke .dagster_home/storage .dagster_home/logs .dagster_home/history
