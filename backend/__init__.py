"""Parley's backend: the system of record behind the bot (profiles, identities,
consent, events) served over an authenticated HTTP API, plus the `parley` CLI."""
