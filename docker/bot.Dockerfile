# Bot runtime: Rasa Open Source 3.6 and the action server (Python 3.10 at most).
FROM python:3.10-slim AS bot
WORKDIR /app
RUN pip install --no-cache-dir "uv==0.13.9"
COPY requirements/bot.txt requirements/bot.txt
RUN uv pip install --system --no-cache -r requirements/bot.txt
COPY pyproject.toml README.md ./
COPY bot bot
COPY actions actions
COPY channels channels
COPY message_rules message_rules
RUN uv pip install --system --no-cache --no-deps .
ENV RASA_TELEMETRY_ENABLED=false SQLALCHEMY_SILENCE_UBER_WARNING=1 TF_CPP_MIN_LOG_LEVEL=2 \
    PARLEY_HOST=0.0.0.0

# The model is trained into the image, so every replica serves the same one.
FROM bot AS rasa
COPY config.yml config.yml
COPY data data
RUN rasa train --config config.yml --domain bot/domain \
      --data data/nlu data/stories data/rules --out models --fixed-model-name parley
EXPOSE 5005
CMD ["python", "-m", "bot.rasa_server", "run", "--model", "models/parley.tar.gz", \
     "--endpoints", "bot/endpoints.scale.yml", "--credentials", "bot/credentials.scale.yml", \
     "--interface", "0.0.0.0", "--port", "5005", "--enable-api"]

FROM bot AS actions
EXPOSE 5055
CMD ["python", "-m", "bot.action_server"]
