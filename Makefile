# The two commands of the README: `make demo` and `make test`. Both create or
# reuse .venv and install the pinned dependencies themselves.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-all venv clean

venv: $(STAMP)

$(STAMP): setup.py requirements.txt requirements-dev.txt
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q torch==2.13.0
	$(VPY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VPY) examples/tiny/run_sicog_loop.py $(ARGS)

test: $(STAMP)
	$(VPY) -m pytest -q -m "not slow" $(ARGS)

test-all: $(STAMP)
	$(VPY) -m pytest -q $(ARGS)

clean:
	rm -rf $(VENV) runs build *.egg-info
