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

demo: install
	$(PY) tools/demo/run_demo.py --work-dir work_dirs/demo

# the paper's study in miniature on the CPU (about 8 min on 2 free cores); work_dirs/study/report.md
study: install
	$(PY) tools/analysis/run_study.py --work-dir work_dirs/study

clean-venv:
	rm -rf $(VENV)
