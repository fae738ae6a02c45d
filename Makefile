# knlp: kernel-style experiment builds. Every target is one or two lines calling Python;
# the logic lives in scripts/ and lib/.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEFCONFIGS := $(sort $(notdir $(wildcard defconfigs/*)))

.DEFAULT_GOAL := run
.PHONY: run deps help menuconfig list-defconfigs olddefconfig savedefconfig allnoconfig \
	alldefconfig test test-slow test-matrix report track bench bench-lenet5 bench-report bench-gpt2 \
	prepare-gpt2-data doctor export bench-sparse clean mrproper

run: $(STAMP) ## Train what .config selects: one run, or the whole test matrix
	$(PY) -m scripts.run $(if $(FRESH),--fresh) $(if $(FORCE),--force)

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV) && $(VENV)/bin/pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

deps: $(STAMP) ## Create .venv from the pinned requirements (done automatically)

help: ## List the targets
	@$(PYTHON) -m scripts.make_help Makefile

menuconfig: $(STAMP) ## Edit .config in a text-mode menu
	@$(PY) -m scripts.kconfig menuconfig

# One explicit rule per shipped defconfig so that shell completion offers them.
define DEFCONFIG_RULE
defconfig-$(1): $(STAMP)
	@$(PY) -m scripts.kconfig defconfig $(1)
endef
$(foreach name,$(DEFCONFIGS),$(eval $(call DEFCONFIG_RULE,$(name))))

defconfig-%: $(STAMP) # unknown names: the script names the closest ones
	@$(PY) -m scripts.kconfig defconfig $*

list-defconfigs: $(STAMP) ## List the shipped configurations
	@$(PY) -m scripts.kconfig list

olddefconfig: $(STAMP) ## Update .config to the current Kconfig tree, new options at defaults
	@$(PY) -m scripts.kconfig olddefconfig

savedefconfig: $(STAMP) ## Minimal config: to defconfigs/$(DEFCONFIG) (FORCE=1 overwrites), or printed
	@$(PY) -m scripts.kconfig savedefconfig $(if $(DEFCONFIG),"$(DEFCONFIG)") $(if $(FORCE),--force)

allnoconfig: $(STAMP) ## .config with every option off that can be
	@$(PY) -m scripts.kconfig allnoconfig

alldefconfig: $(STAMP) ## .config with every option at its default
	@$(PY) -m scripts.kconfig alldefconfig

test-matrix: $(STAMP) ## Run the sweep .config selects (DRY_RUN=1 plans, RERUN=failed retries)
	$(PY) -m scripts.sweep $(if $(DRY_RUN),--dry-run) $(if $(RERUN),--rerun $(RERUN))

report: $(STAMP) ## Tables and plots of a results directory (DIR=results/...)
	$(PY) -m scripts.report $(if $(DIR),"$(DIR)")

track: $(STAMP) ## Send runs' files to the tracker .config selects (DIR=results/... or a run)
	$(PY) -m scripts.track $(DIR)

prepare-gpt2-data: $(STAMP) ## Tokenize the GPT-2 training text into shards
	$(PY) -m scripts.prepare_gpt2_data

bench: $(STAMP) ## Optimizer/pruning cost vs fused AdamW (ARGS=--full for 85M weights)
	$(PY) -m scripts.bench_optimizers $(ARGS)

bench-lenet5: $(STAMP) ## LeNet-5 epoch and run time on this machine
	$(PY) -m scripts.bench_lenet5 $(ARGS)

bench-report: $(STAMP) ## Report build time from 1,000 synthetic run directories (ARGS=--runs N)
	$(PY) -m scripts.bench_report $(ARGS)

bench-gpt2: $(STAMP) ## GPT-2 training throughput here (on a GPU: 124M, bf16, compile on/off, MFU)
	$(PY) -m scripts.bench_gpt2 $(ARGS)

doctor: $(STAMP) ## Check this machine: environment, AUTO's choices, train/compile/prune/resume/DDP per device
	$(PY) -m scripts.doctor $(ARGS)

export: $(STAMP) ## Write RUN's export/ (safetensors, compact sparse, HF GPT-2); WHICH=best|last
	$(PY) -m scripts.export $(if $(RUN),--run $(RUN)) $(if $(WHICH),--which $(WHICH))

bench-sparse: $(STAMP) ## Dense vs sparse (CSR; 2:4 on CUDA) time and memory of RUN's export
	$(PY) -m scripts.bench_sparse $(if $(RUN),--run $(RUN)) $(ARGS)

# CI (CI=true) has the time for the slow tests too.
test: $(STAMP) ## Run the fast test suite (and the slow ones under CI)
	$(PY) -m pytest -q $(if $(CI),-m "slow or not slow")

test-slow: $(STAMP) ## Run every test, slow ones included
	$(PY) -m pytest -q -m "slow or not slow"

clean: ## Remove generated files (keeps .config, .venv, runs and results)
	rm -rf config.py .pytest_cache $$(find . -name __pycache__ -not -path './$(VENV)/*')

mrproper: clean ## Also remove .config and .venv (never runs/ or results/)
	rm -rf .config .config.old $(VENV)
