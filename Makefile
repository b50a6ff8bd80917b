# The two commands a fresh clone needs: `make demo` and `make test`.
# Everything else here is a helper they call.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A second environment pins the previous openai generation (2.x, on httpx) so the
# provider tests prove both SDK generations in every `make test`.
VENV2 := .venv-openai2
BIN2 := $(VENV2)/bin
SDK_TESTS := tests/providers tests/testing/test_openai_endpoint.py tests/layers/test_retry_after_table.py

.PHONY: demo test docs bench lint typecheck pytest clean

demo: $(VENV)/.base-installed
	$(BIN)/python examples/quickstart.py

test: $(VENV)/.dev-installed $(VENV2)/.dev-installed
	bash scripts/ensure-redis.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict src tests/typing
	$(MAKE) --no-print-directory docs
	rm -f .coverage .coverage.*
	$(BIN)/coverage run -m pytest
	@echo "--- the provider tests again, on openai 2.x ---"
	$(BIN2)/python -c "import openai; assert openai.__version__.startswith('2.'), openai.__version__"
	$(BIN2)/coverage run -m pytest -q $(wildcard $(SDK_TESTS))
	$(BIN)/coverage combine -q
	$(BIN)/coverage report

# The documentation site (Sphinx + MyST, docs/conf.py) into docs/_build/html. Warnings are
# errors (-W, --keep-going to list them all); -E re-reads every page, so a warning is never
# hidden by an up-to-date page from an earlier build.
docs: $(VENV)/.dev-installed
	$(BIN)/sphinx-build -W --keep-going -E -q -b html docs docs/_build/html

bench: $(VENV)/.dev-installed
	bash scripts/ensure-redis.sh
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/profile_sdk.py
	$(BIN)/python benchmarks/instructions.py
	$(BIN)/python benchmarks/stores.py
	$(BIN)/python benchmarks/stream.py
	$(BIN)/python benchmarks/tools.py
	$(BIN)/python benchmarks/structured.py
	$(BIN)/python benchmarks/fallback.py
	$(BIN)/python benchmarks/budget.py
	$(BIN)/python benchmarks/cache.py
	$(BIN)/python benchmarks/full_stack.py

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	touch $@

$(VENV)/.base-installed: $(VENV)/.created pyproject.toml
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.created pyproject.toml
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@ $(VENV)/.base-installed

$(VENV2)/.dev-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV2)
	$(BIN2)/python -m pip install -q --upgrade pip
	$(BIN2)/python -m pip install -q -e ".[dev]" "openai>=2,<3"
	touch $@

clean:
	rm -rf $(VENV) $(VENV2) .coverage .coverage.* .mypy_cache .pytest_cache .ruff_cache
