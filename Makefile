# `make reproduce` and `make test` are all a user types: each sets itself up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The CPU build of torch (pip finds 2.13.0 on these machines); on a GPU machine
# `make setup TORCH=torch` takes the CUDA build instead. The code picks the device itself.
TORCH  ?= torch==2.13.0

.PHONY: setup test test-fast lint data reproduce bench clean slurm-up slurm-down

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check "$(TORCH)"
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev,glove,slurm]'
	$(BIN)/python -m ablation.fused  # compile the fused C++ LSTM scan now (~40 s; without a compiler: a notice)
	touch $(STAMP)

# The whole suite, slow and Slurm tests included (what CI runs): a single-node Slurm
# cluster comes up for the Slurm tests (scripts/slurm.sh) and goes down after. If it
# cannot come up, the Slurm tests skip and say so; the others still run.
test: setup
	@if scripts/slurm.sh up > $(VENV)/slurm.env; then echo "export ABLATION_REQUIRE_SLURM=1" >> $(VENV)/slurm.env; \
	  else echo "make test: WARNING: no Slurm cluster; the Slurm tests will skip" >&2; : > $(VENV)/slurm.env; fi
	. $(VENV)/slurm.env && $(BIN)/python -m pytest -q; rc=$$?; scripts/slurm.sh down 2>/dev/null || true; exit $$rc

slurm-up: setup  ## a single-node Slurm cluster on loopback; `source .venv/slurm.env` to use it
	scripts/slurm.sh up > $(VENV)/slurm.env && cat $(VENV)/slurm.env

slurm-down:
	scripts/slurm.sh down

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check ablation tests benchmarks

data: setup  ## verify the SST trees (downloading them if none are found) and print counts
	$(BIN)/ablation data

reproduce: setup  ## the lecture grid (8 gate sets x 5 seeds), its table and its figures
	$(BIN)/ablation grid experiments/lecture.toml --out results/lecture
	$(BIN)/ablation table results/lecture --readme README.md > /dev/null
	$(BIN)/ablation plot results/lecture > /dev/null
	cat results/lecture/table.md

# Beyond the lecture (README, "Beyond the lecture"): each experiment's grid (5 seeds),
# table and figures into results/<name>/. `make beyond` runs all four (~1 h 45 min on 2 cores).
EXPERIMENTS := peepholes odyssey cells protocol
.PHONY: beyond $(EXPERIMENTS)

$(EXPERIMENTS): setup
	$(BIN)/ablation grid experiments/$@.toml --out results/$@
	$(BIN)/ablation table results/$@ > /dev/null
	$(BIN)/ablation plot results/$@ > /dev/null
	cat results/$@/table.md

beyond: $(EXPERIMENTS)

bench: setup
	$(BIN)/python benchmarks/bench_grid.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
