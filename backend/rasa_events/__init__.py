"""Rasa's conversation events, consumed from RabbitMQ in the scale profile
(`parley consume-events`): each held once in `rasa_events` (the backend's copy of every
transcript, reached by export, erasure and retention), and the intents and completed
forms in them recorded as behaviour events, as the bot's HTTP broker reports them in
the embedded default."""
