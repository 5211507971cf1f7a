# The two commands of the README:  `make grade`  and  `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
GRADER := $(VENV)/bin/grader
OUT    ?= out

.PHONY: system setup data grade test check-types bench
system:
	@scripts/system-deps.sh

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[grading,ray,dev]'
	touch $@

setup: $(VENV)/.installed

data: system setup
	$(GRADER) data

grade: data
	$(GRADER) grade submissions/ --out $(OUT)

# The tests run on every core (pytest-xdist, one worker per test file); a test that checks what its
# sandboxes left looks at its own processes only (tests/sandboxing.py).
test: data
	@scripts/system-deps.sh chromium
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -n auto --maxprocesses 4 --dist loadfile

bench: data
	$(PY) benchmarks/bench_check.py
