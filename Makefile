# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-without-tools test-slow bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH bash recipes/fsdd/cls/run.sh --quick

# Fast: before every commit (about 3 minutes on 2 cores). Slow (about 13): multi-process, kill/resume, Whisper base,
# every adapter config on every task, recipes.
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# The fast suite as a fresh machine runs it: espeak-ng, flite, ffmpeg and sox hidden (their tests skip).
test-without-tools: $(STAMP)
	bash tests/without_system_tools.sh $(PY) -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) benches/adapter_overhead.py

clean:
	rm -rf $(VENV) exp
