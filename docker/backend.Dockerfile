# Backend runtime: the aiohttp API and the `parley` CLI (newest Python, current libraries).
FROM python:3.12-slim
WORKDIR /app
RUN pip install --no-cache-dir "uv==0.13.9"
COPY requirements/backend.txt requirements/backend.txt
# The lock's `-e .` line is the project itself, installed below without its deps.
RUN grep -v '^-e ' requirements/backend.txt > /tmp/backend.txt \
 && uv pip install --system --no-cache -r /tmp/backend.txt
COPY pyproject.toml README.md alembic.ini ./
COPY backend backend
COPY message_rules message_rules
RUN uv pip install --system --no-cache --no-deps .
ENV PARLEY_HOST=0.0.0.0 PARLEY_LOG_FORMAT=json
EXPOSE 8000
CMD ["parley", "backend"]
