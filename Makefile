# Two commands do all set-up on a fresh clone: `make demo` and `make test`.
VENV   := .venv
PYTHON ?= python3
STAMP  := $(VENV)/.installed

.PHONY: demo test bench postgres chromium clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lifecycle demo

postgres:
	@bash scripts/ensure-postgres.sh

chromium:
	@bash scripts/ensure-chromium.sh

# The Ray tests run apart, in a network namespace of their own (see scripts/private-network.sh).
test: $(STAMP) postgres chromium
	$(VENV)/bin/pytest -q -m "not ray"
	scripts/private-network.sh $(VENV)/bin/pytest -q -m ray

bench: $(STAMP)
	$(VENV)/bin/python bench/analytic_forget.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis
