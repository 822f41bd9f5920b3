"""Parley's custom Rasa input/output channels (SMS, voice, web chat, voice assistants),
each loaded from bot/credentials.yml by module path. None yet: the REST channel serves."""
