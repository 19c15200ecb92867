# `make reproduce` and `make test` are all a user types: each sets itself up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The CPU build of torch (pip finds 2.13.0 on these machines); on a GPU machine
# `make setup TORCH=torch` takes the CUDA build instead. The code picks the device itself.
TORCH  ?= torch==2.13.0

.PHONY: setup test test-fast lint data reproduce tables bench clean slurm-up slurm-down notebook

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check "$(TORCH)"
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev,glove,slurm,tensorboard,triton,tune]'
	$(BIN)/python -m ablation.fused  # compile the fused C++ LSTM scan now (~40 s; without a compiler: a notice)
	touch $(STAMP)

# The whole suite, slow and Slurm tests included (what CI runs): a single-node Slurm
# cluster comes up for the Slurm tests (scripts/slurm.sh) and goes down after. If it
# cannot come up, the Slurm tests skip and say so; the others still run. qemu-user (Debian)
# lets a test train on an emulated Intel CPU (tests/test_numerics.py); without it that test skips.
test: setup
	@command -v qemu-x86_64 >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq >/dev/null && \
	  apt-get install -y -qq qemu-user >/dev/null; } || echo "make test: WARNING: no qemu-user; the emulated-CPU test will skip" >&2
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

# Tables, effects, figures and README blocks come from one path, `ablation table --readme`
# then `ablation plot`, so the README cannot drift from the records. `python -m ablation.cli`
# (not the installed script) so that PYTHONPATH may point at another checkout.
ABLATION := $(BIN)/python -m ablation.cli
# Every committed results directory with a table (results/single holds single runs of
# different configs, one seed each: nothing to tabulate).
TABLES := lecture peepholes odyssey cells protocol fine

define table_and_figures
	$(ABLATION) table results/$(1) --readme README.md > /dev/null
	$(ABLATION) plot results/$(1) > /dev/null
endef

reproduce: setup  ## the lecture grid (8 gate sets x 20 seeds), its table, figures and README reading
	$(ABLATION) grid experiments/lecture.toml --out results/lecture
	$(call table_and_figures,lecture)
	cat results/lecture/table.md

tables: setup  ## regenerate every committed table, effects file, figure and README block (no training)
	set -e; for d in $(TABLES); do \
	  $(ABLATION) table results/$$d --readme README.md > /dev/null; \
	  $(ABLATION) plot results/$$d > /dev/null; \
	done
	for d in gpu bench; do $(BIN)/python -c "from ablation.render import update_readme; update_readme('README.md', 'results/$$d')"; done

# Beyond the lecture (README, "Beyond the lecture"): each experiment's grid (5 seeds),
# table and figures into results/<name>/, readings into README.md. `make beyond` runs all four.
EXPERIMENTS := peepholes odyssey cells protocol
.PHONY: beyond $(EXPERIMENTS)

$(EXPERIMENTS): setup
	$(ABLATION) grid experiments/$@.toml --out results/$@
	$(call table_and_figures,$@)
	cat results/$@/table.md

# `make fine`: the lecture's gate grid on SST-5 (experiments/fine.toml; 159,274 training
# phrases, twice SST-2's). Not part of `make beyond`.
.PHONY: fine
fine: setup
	$(ABLATION) grid experiments/$@.toml --out results/$@
	$(call table_and_figures,$@)
	cat results/$@/table.md

beyond: $(EXPERIMENTS)

# `make tuning`: does the lecture's ordering survive tuning? (README; experiments/tuning.toml):
# random search in packs, the best configuration of each gate set on 10 fresh seeds, the tuned
# table beside results/lecture, fANOVA importance and figures, all into results/tuning/.
.PHONY: tuning
tuning: setup
	$(ABLATION) tune experiments/tuning.toml --out results/tuning --untuned results/lecture --readme README.md

# notebooks/lecture_table.ipynb run top to bottom against results/lecture, outputs saved
# in place (so it reads as a report on the repository's web page); run it after `make reproduce`.
notebook: setup
	cd notebooks && env -u MPLBACKEND ABLATION_RESULTS=$(CURDIR)/results/lecture \
	  $(CURDIR)/$(BIN)/jupyter execute --inplace --timeout=600 lecture_table.ipynb

# Each run appends its figures to results/bench/bench.jsonl; `make tables` writes the README's from them.
bench: setup  ## portable numerics (what training runs), then --fast-numerics: the portable mode's cost
	mkdir -p results/bench && rm -f results/bench/bench.jsonl
	$(BIN)/python benchmarks/bench_grid.py --json results/bench/bench.jsonl
	$(BIN)/python benchmarks/bench_grid.py --fast-numerics --json results/bench/bench.jsonl

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
