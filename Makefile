# `make reproduce` and `make test` are all a user types: each sets itself up first. `make help` lists the rest.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The CPU build of torch (pip finds 2.13.0 on these machines); on a GPU machine
# `make setup TORCH=torch` takes the CUDA build instead. The code picks the device itself.
TORCH  ?= torch==2.13.0
# `python -m ablation.cli` (not the installed script), so that PYTHONPATH may point at another checkout.
ABLATION := $(BIN)/python -m ablation.cli
SEEDS ?=

.PHONY: help setup test test-fast lint data reproduce tables bench clean slurm-up slurm-down notebook

help:  ## this list: every target, what it does and what it costs (2-core machine)
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z0-9_-]*:.*## / {printf "  make %-11s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: $(STAMP)  ## the .venv: CPU torch, the package and its extras, the C++ kernels compiled (~3 min, once)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check "$(TORCH)"
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev,glove,slurm,tasks,tensorboard,triton,tune]'
	$(BIN)/python -m ablation.kernels.cpp  # build the C++ kernels now (~40 s); without a compiler: a notice
	touch $(STAMP)

# A single-node Slurm cluster comes up for the Slurm tests (scripts/slurm.sh) and goes down after; if it
# cannot, they skip and say so. Nothing is installed outside .venv: the emulated-CPU test needs Debian's
# qemu-user (CI's .ci/run installs it) and skips without it.
test: setup  ## the whole suite, slow tests included (what CI runs; ~12 min)
	@if scripts/slurm.sh up > $(VENV)/slurm.env; then echo "export ABLATION_REQUIRE_SLURM=1" >> $(VENV)/slurm.env; \
	  else echo "make test: WARNING: no Slurm cluster; the Slurm tests will skip" >&2; : > $(VENV)/slurm.env; fi
	. $(VENV)/slurm.env && $(BIN)/python -m pytest -q; rc=$$?; scripts/slurm.sh down 2>/dev/null || true; exit $$rc

test-fast: setup  ## the suite without slow, subprocess, compile and interpreter tests (~3 min)
	$(BIN)/python -m pytest -q -m "not slow"

slurm-up: setup  ## a single-node Slurm cluster on loopback; `source .venv/slurm.env` to use it
	scripts/slurm.sh up > $(VENV)/slurm.env && cat $(VENV)/slurm.env

slurm-down:  ## stop it
	scripts/slurm.sh down

lint: setup  ## ruff
	$(BIN)/ruff check ablation tests benchmarks

data: setup  ## verify the SST trees (downloading them if none are found) and print counts
	$(BIN)/ablation data

# Every committed results directory with a table (results/single holds single runs of different configs).
TABLES := lecture peepholes odyssey cells protocol fine lag mnist1d lm chorales tuned_paired

# make reproduce: retrains the lecture grid into runs/lecture (not results/, which stays the reference),
# resumably; SEEDS=N keeps the first N seeds. It prints the cost first, from the committed records.
reproduce: setup  ## retrain the lecture grid into runs/lecture, compare with results/ (~1 core-hour; SEEDS=1: ~3 min)
	$(ABLATION) grid experiments/lecture.toml --out runs/lecture $(if $(SEEDS),--seeds $(SEEDS)) --dry-run \
	  --estimate-from results/lecture
	$(ABLATION) grid experiments/lecture.toml --out runs/lecture $(if $(SEEDS),--seeds $(SEEDS))
	$(ABLATION) table runs/lecture > /dev/null
	$(ABLATION) plot runs/lecture > /dev/null
	cat runs/lecture/table.md
	$(ABLATION) compare runs/lecture results/lecture

tables: setup  ## rewrite every committed table, page, figure and generated block from the records (~2 min)
	set -e; for d in $(TABLES) tuning; do $(ABLATION) plot results/$$d > /dev/null 2>&1 || true; done
	$(ABLATION) table $(addprefix results/,$(TABLES) tuning) --readme README.md > /dev/null
	$(ABLATION) table results/single > /dev/null
	$(BIN)/python -c "from ablation.analysis.render import write_secondary; write_secondary('results')"
	$(BIN)/python -c "from ablation.analysis.summary import write_summary; write_summary('results')"
	$(BIN)/python -c "from ablation.analysis.render import update_docs; update_docs()"

# Beyond the lecture: each experiment's grid (5 seeds) into results/<name>/, then its tables, page and figures.
EXPERIMENTS := peepholes odyssey cells protocol fine lag mnist1d lm chorales
.PHONY: beyond $(EXPERIMENTS) tuning

$(EXPERIMENTS): setup
	$(ABLATION) grid experiments/$@.toml --out results/$@
	$(ABLATION) plot results/$@ > /dev/null
	$(ABLATION) table results/$@ > /dev/null
	cat results/$@/table.md

peepholes: ## peepholes x the 8 gate sets, 5 seeds (~4 core-hours)
odyssey:   ## Greff et al.'s variants, 5 seeds (~2 core-hours)
cells:     ## Elman RNN, GRU, forget bias 1 against the LSTM, 5 seeds (~2 core-hours)
protocol:  ## phrases or sentences x GloVe or random vectors, 5 seeds (~1 core-hour)
fine:      ## the 8 gate sets on SST-5, 5 seeds (~1.5 core-hours)
lag:       ## the 8 gate sets x 4 sequence lengths on the adding problem, 5 seeds (~2.5 core-hours)
mnist1d:   ## the 8 gate sets on MNIST-1D, 5 seeds (~0.5 core-hours)
lm:        ## the 8 gate sets as language models of SST's sentences, 5 seeds (~1 core-hour)
chorales:  ## the 8 gate sets on Bach chorales as piano rolls, 5 seeds (~0.2 core-hours)

beyond: $(EXPERIMENTS)  ## all nine above

tuning: setup  ## random search per gate set, the best retrained on fresh seeds (~8 core-hours; resumes)
	$(ABLATION) tune experiments/tuning.toml --out results/tuning --untuned results/lecture \
	  $(if $(wildcard results/tuned_paired/experiment.toml),--paired results/tuned_paired)

.PHONY: tuned-paired
tuned-paired: setup  ## each gate set's tuned configuration on the lecture's 20 seeds, for `make tuning` (~5 core-hours)
	$(ABLATION) grid experiments/tuned_paired.toml --out results/tuned_paired

notebook: setup  ## run notebooks/lecture_table.ipynb in place against results/lecture
	cd notebooks && env -u MPLBACKEND ABLATION_RESULTS=$(CURDIR)/results/lecture \
	  $(CURDIR)/$(BIN)/jupyter execute --inplace --timeout=600 lecture_table.ipynb

# Each run appends its figures to results/bench/bench.jsonl; `make tables` writes docs/performance.md's from them.
bench: setup  ## time our packs against sequential nn.LSTM, portable and fast numerics; a grid's epoch (~6 min)
	mkdir -p results/bench && rm -f results/bench/bench.jsonl
	$(BIN)/python benchmarks/bench_grid.py --json results/bench/bench.jsonl
	$(BIN)/python benchmarks/bench_grid.py --fast-numerics --json results/bench/bench.jsonl
	$(BIN)/python benchmarks/bench_epoch.py

clean:  ## remove .venv and caches (not runs/ or results/)
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
