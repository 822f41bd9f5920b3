"""Parley's custom Rasa input/output channels, each loaded from bot/credentials.yml by
module path and each checking that a request comes from its platform before anything
is processed: SMS and phone calls through Twilio, web chat, and Alexa (docs/channels.md)."""
