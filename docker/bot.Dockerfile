# syntax=docker/dockerfile:1
# Bot runtime: the Rasa server and the action server (Python 3.10, Rasa 3.6), with the
# model trained into the image so every replica serves the same one. Built as CI builds
# it: scripts/install makes .venv (the backend's `parley` CLI) and .venv-bot from the
# lock files, and `parley train` (what `make train` runs) generates the training input
# from data/business.yml and data/catalog.yml, then trains on it. Every RUN here is a
# command `make test` runs (tests/backend/ops/test_deployment_files.py checks it).
# Secrets come from the environment at run time; .dockerignore keeps .env out.

# `parley` needs Python >= 3.11 beside the bot's 3.10. This official image's interpreter
# is copied into the training stage: same Debian release, so the same shared libraries,
# and its binary finds its libpython through its rpath ($ORIGIN/../lib).
FROM python:3.12-slim-bookworm AS cli-python

FROM python:3.10-slim-bookworm AS train
COPY --from=cli-python /usr/local/bin/python3.12 /usr/local/bin/python3.12
COPY --from=cli-python /usr/local/lib/python3.12 /usr/local/lib/python3.12
COPY --from=cli-python /usr/local/lib/libpython3.12.so.1.0 /usr/local/lib/libpython3.12.so.1.0
WORKDIR /app
# uv's cache is a build cache mount, another filesystem: copy rather than hard-link.
ENV UV_LINK_MODE=copy
COPY requirements requirements
COPY scripts scripts
COPY pyproject.toml README.md ./
# Before the installs: the project is installed editable, and hatchling points each
# environment only at the packages that exist when it runs.
COPY backend backend
COPY message_rules message_rules
COPY bot bot
COPY actions actions
COPY channels channels
RUN --mount=type=cache,target=/root/.cache/uv scripts/install backend
RUN --mount=type=cache,target=/root/.cache/uv scripts/install bot
COPY config.yml config.yml
COPY data data
RUN .venv/bin/parley train

# The bot runtime alone: its environment (made above with this same interpreter), its
# code and what it reads at run time (data/business.yml and catalog.yml, bot/domain,
# the endpoints and credentials).
FROM python:3.10-slim-bookworm AS bot
WORKDIR /app
COPY --from=train /app/.venv-bot .venv-bot
COPY message_rules message_rules
COPY bot bot
COPY actions actions
COPY channels channels
COPY data data
# The environment `parley run` gives the bot's processes (backend/ops/launcher.py).
ENV PATH=/app/.venv-bot/bin:$PATH PARLEY_HOST=0.0.0.0 \
    RASA_TELEMETRY_ENABLED=false SQLALCHEMY_SILENCE_UBER_WARNING=1 TF_CPP_MIN_LOG_LEVEL=2 \
    PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore::DeprecationWarning

# The model, with the spaCy pipeline it loads by absolute path (models/build/…): the
# same /app as the training stage, so that path holds here too.
FROM bot AS rasa
COPY --from=train /app/models models
# How `parley run` serves the model (RASA_SERVING_ENV in backend/ops/launcher.py).
ENV TF_INTER_OP_PARALLELISM_THREADS=1 TF_INTRA_OP_PARALLELISM_THREADS=1
EXPOSE 5005
CMD ["/app/.venv-bot/bin/python", "-m", "bot.rasa_server", "run", "--model", "/app/models", \
     "--endpoints", "/app/bot/endpoints.scale.yml", \
     "--credentials", "/app/bot/credentials.scale.yml", \
     "--interface", "0.0.0.0", "--port", "5005", "--enable-api"]

FROM bot AS actions
EXPOSE 5055
CMD ["/app/.venv-bot/bin/python", "-m", "bot.action_server"]
