# The two commands of the README: `make demo` and `make test`. Both create or
# reuse .venv and install the dependencies pinned in constraints.txt themselves.
# On a GPU cluster do not use them: see the README, "On a GPU cluster".
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-all test-lmms-eval venv clean base-model

venv: $(STAMP)

$(STAMP): setup.py requirements.txt requirements-dev.txt constraints.txt
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VPY) examples/tiny/run_sicog_loop.py $(ARGS)

# the demo's embedded pretrained base (examples/tiny/base, shipped): how it was made, ~25 min on 2 cores
base-model: $(STAMP)
	$(VPY) tools/make_base_model.py $(ARGS)

test: $(STAMP)
	$(VPY) -m pytest -q -m "not slow and not lmms_eval" $(ARGS)

test-all: $(STAMP)
	$(VPY) -m pytest -q $(ARGS)

# lmms-eval (large: ~85 more packages) lives in its own venv, outside `make venv`.
LMMS_VENV := .venv-lmms-eval
LMMS_STAMP := $(LMMS_VENV)/.installed

$(LMMS_STAMP): setup.py requirements.txt requirements-dev.txt requirements-lmms-eval.txt constraints.txt
	test -x $(LMMS_VENV)/bin/python || $(PY) -m venv $(LMMS_VENV)
	$(LMMS_VENV)/bin/python -m pip install -q --upgrade pip
	$(LMMS_VENV)/bin/python -m pip install -q -c constraints.txt -e '.[dev,lmms-eval]'
	$(LMMS_VENV)/bin/python -m pip uninstall -y -q torchvision
	touch $(LMMS_STAMP)

test-lmms-eval: $(LMMS_STAMP)
	$(LMMS_VENV)/bin/python -m pytest -q -m lmms_eval $(ARGS)

clean:
	rm -rf $(VENV) $(LMMS_VENV) runs build *.egg-info
