# Two commands do all set-up on a fresh machine:
#   make test   create .venv with the pinned stack if needed, then run every test;
#               then the same for the minimum-version stack (.venv-min) and its subset
#   make demo   same install, then the main job in miniature on the CPU
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# the minimum-version stack: the reference pins with those of this file replaced
VENV_MIN ?= .venv-min
CONSTRAINTS_MIN ?= requirements/constraints-min.txt
PY_MIN := $(VENV_MIN)/bin/python
PYTEST_ARGS ?=

.PHONY: install install-min lint test test-min test-fast demo study clean-venv

install:
	VENV=$(VENV) PYTHON=$(PYTHON) bash tools/setup_env.sh

install-min:
	CONSTRAINTS=$(CONSTRAINTS_MIN) VENV=$(VENV_MIN) PYTHON=$(PYTHON) bash tools/setup_env.sh

lint: install
	VENV=$(VENV) bash tools/lint.sh

# What CI runs (.ci/run), in this order so that a failure on the reference stack
# is the first one seen: the reference install, lint, the whole suite, then the
# minimum-version install and its marked subset.
test: install
	VENV=$(VENV) bash tools/lint.sh
	$(PY) -m pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-min

# the tests marked min_stack (the list: MIN_STACK in tests/conftest.py) on the
# minimum-version stack, torch 2.1.2 (its time: docs/install.md#ci-timings)
test-min: install-min
	$(PY_MIN) -m pytest -m min_stack $(PYTEST_ARGS)

# the fast set: everything not marked slow
test-fast: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# Your own data: make demo DATA=path/to/folder [NUM_CLASSES=N IMG_SIZE=64
# PATCH_SIZE=8 ITERS=300] (ImageNet-style: train/ and val/ with class folders,
# or meta/train.txt + meta/val.txt); the built-in generated objects otherwise.
MINIATURE_ARGS = $(if $(DATA),--data-root $(DATA)) \
	$(if $(NUM_CLASSES),--num-classes $(NUM_CLASSES)) \
	$(if $(IMG_SIZE),--img-size $(IMG_SIZE)) \
	$(if $(PATCH_SIZE),--patch-size $(PATCH_SIZE)) \
	$(if $(ITERS),--iters $(ITERS))

# the main job in miniature (its time: docs/miniature.md); work_dirs/demo/report.md
demo: install
	$(PY) tools/demo/run_demo.py --work-dir work_dirs/demo $(MINIATURE_ARGS)

# the paper's study in miniature: the teachers' premise, 5 seeds, the top-k
# ablation (its time: docs/miniature.md);
# work_dirs/study/report.md
study: install
	$(PY) tools/analysis/run_study.py --work-dir work_dirs/study $(MINIATURE_ARGS)

clean-venv:
	rm -rf $(VENV) $(VENV_MIN)
