# Two commands do all set-up on a fresh machine:
#   make test   create .venv with the pinned stack if needed, then run every test
#   make demo   same install, then the main job in miniature on the CPU
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install test test-fast demo study clean-venv

install:
	VENV=$(VENV) PYTHON=$(PYTHON) bash tools/setup_env.sh

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

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

# the main job in miniature (about 5 min on 2 cores); work_dirs/demo/report.md
demo: install
	$(PY) tools/demo/run_demo.py --work-dir work_dirs/demo $(MINIATURE_ARGS)

# the paper's study in miniature, 3 seeds (about 20 min on 2 cores);
# work_dirs/study/report.md
study: install
	$(PY) tools/analysis/run_study.py --work-dir work_dirs/study $(MINIATURE_ARGS)

clean-venv:
	rm -rf $(VENV)
