PY := .venv/bin/python
PIP := .venv/bin/pip

.PHONY: install demo test lint bench clean

.venv:
	python3 -m venv .venv
	$(PIP) install -qq --upgrade pip
	$(PIP) install -qq torch==2.13.0
	$(PIP) install -qq -e ".[dev,export,pose]"
	$(PIP) install -qq --no-deps mediapipe==0.10.14
	$(PY) -c "import deformact, torch; print('deformact', deformact.__version__, 'torch', torch.__version__)"

install: .venv

demo: .venv
	$(PY) -m deformact demo --out runs/demo

test: .venv
	$(PY) -m pytest -q -x --durations=15

lint: .venv
	.venv/bin/ruff check deformact tests

bench: .venv
	$(PY) -m deformact bench --json runs/bench.json

clean:
	rm -rf .venv runs build *.egg-info
