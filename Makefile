# Parley. `make run` starts the whole service; `make test` checks everything.
# Both install what is missing first (.venv and .venv-bot, from requirements/*.txt).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
BOT := .venv-bot
BACKEND_READY := $(VENV)/.parley-installed
BOT_READY := $(BOT)/.parley-installed
CHROMIUM := /usr/bin/chromium
PY := backend actions bot channels message_rules tests bench

.PHONY: help install run test lint typecheck test-backend test-bot validate train test-model test-dialogue test-nlu test-serving test-e2e \
        bench lock clean

help: ## List the targets.
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

install: $(BACKEND_READY) $(BOT_READY) ## Create or update both virtual environments.

$(BACKEND_READY): requirements/backend.txt pyproject.toml scripts/install scripts/find-python \
                  backend/console/package.json backend/console/package-lock.json
	scripts/install backend
	touch $@

$(BOT_READY): requirements/bot.txt pyproject.toml scripts/install scripts/find-python | $(BACKEND_READY)
	scripts/install bot
	touch $@

run: install ## Start backend, action server and Rasa on loopback; Ctrl-C stops them.
	$(VENV)/bin/parley run

test: lint typecheck test-backend test-bot validate train test-model test-e2e ## Everything CI runs.
	@echo "make test: all checks passed"

lint: install ## ruff (lint and formatting) and import-linter (the boundaries between packages).
	$(VENV)/bin/ruff check $(PY)
	$(VENV)/bin/ruff format --check $(PY)
	$(VENV)/bin/lint-imports

typecheck: install ## mypy, each runtime with its own interpreter and libraries.
	$(VENV)/bin/mypy backend bench tests/backend tests/e2e
	$(BOT)/bin/mypy actions bot channels message_rules tests/bot tests/message_rules tests/model

test-backend: install ## Backend unit and API tests (SQLite and PostgreSQL).
	$(VENV)/bin/pytest -n auto tests/backend

test-bot: install ## Action and action-server tests (Python 3.10, against the real backend).
	$(BOT)/bin/python -m pytest -p no:cacheprovider tests/bot tests/message_rules

validate: install ## rasa data validate on data/, bot/domain/ and config.yml.
	$(VENV)/bin/parley validate

train: install ## Train the Rasa model if its inputs changed.
	$(VENV)/bin/parley train

# The three checks of the trained model are independent: side by side, each one's output
# kept together.
test-model: train ## test-dialogue, test-nlu and test-serving side by side.
	$(MAKE) --no-print-directory -j3 --output-sync=target test-dialogue test-nlu test-serving

test-dialogue: train ## Test stories (tests/stories) through the model: any wrong action fails.
	$(VENV)/bin/parley test stories

test-nlu: train ## The held-out NLU test set (tests/nlu): F1 >= 0.90; opt-out, consent, hand-off rates.
	$(VENV)/bin/parley test nlu

test-serving: train ## The model as Parley serves it (tests/model) predicts what Rasa's own code does.
	$(VENV)/bin/parley test serving

test-e2e: train $(CHROMIUM) ## Start all three processes; chat through Rasa's REST channel and the web chat in Chromium.
	$(VENV)/bin/pytest tests/e2e

# The web chat tests drive Debian's Chromium (never a browser Playwright downloads).
$(CHROMIUM):
	scripts/install chromium

bench: install ## Benchmarks (PostgreSQL needed); results go to docs/benchmarks.md.
	$(VENV)/bin/python -m bench

lock: ## Re-resolve requirements/*.txt from requirements/*.in (after changing a dependency).
	$(VENV)/bin/uv pip compile requirements/backend.in --universal --python-version 3.11 \
	  --annotation-style line -o requirements/backend.txt
	$(VENV)/bin/uv pip compile requirements/bot.in --universal --python-version 3.10 \
	  --annotation-style line -o requirements/bot.txt

clean: ## Remove both environments, models and local state (var/).
	rm -rf $(VENV) $(BOT) models var .rasa .mypy_cache .ruff_cache .pytest_cache
