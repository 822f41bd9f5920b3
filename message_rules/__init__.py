"""The rules both runtimes apply, and so the one package both may import (standard
library only, no I/O): SMS keywords, segments and splitting (`sms`), text made fit to be
spoken on a call or by Alexa (`speech`), the one door's signature on a web chat push
(`door_signature`), what Rasa's conversation events mean to the backend
(`rasa_events`), and the bounds of their RabbitMQ queue (`event_queue`)."""
