"""Parley's custom Rasa actions (served by `python -m bot.action_server`): one module
per feature, all talking to the backend through `backend_client`."""
