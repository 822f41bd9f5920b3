# syntax=docker/dockerfile:1
# Backend runtime: the aiohttp API, the scheduler workers and the `parley` CLI (newest
# Python, current libraries). Built as CI builds it: `scripts/install backend` makes
# .venv from requirements/backend.txt. Every RUN here is a command `make test` runs
# (tests/backend/ops/test_deployment_files.py checks it). Secrets come from the
# environment at run time; .dockerignore keeps .env out of the build.
FROM python:3.12-slim-bookworm
WORKDIR /app
# uv's cache is a build cache mount, another filesystem: copy rather than hard-link.
ENV UV_LINK_MODE=copy
COPY requirements requirements
COPY scripts scripts
COPY pyproject.toml README.md ./
# Before the install: the project is installed editable, and hatchling points the
# environment only at the packages that exist when it runs.
COPY backend backend
COPY message_rules message_rules
RUN --mount=type=cache,target=/root/.cache/uv scripts/install backend
# What `parley backend` and `parley worker` read: what marketers edit, and the bot's
# domain, whose intents and forms sequences may name (backend/data_files.py).
COPY data data
COPY bot/domain bot/domain
ENV PATH=/app/.venv/bin:$PATH PARLEY_HOST=0.0.0.0 PARLEY_LOG_FORMAT=json
EXPOSE 8000
CMD ["parley", "backend"]
