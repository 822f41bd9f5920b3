"""The rules of message text that both runtimes apply, and so the one package both may
import (standard library only, no I/O): SMS keywords, segments and splitting (`sms`),
text made fit to be spoken on a call or by Alexa (`speech`), and the one door's
signature on a web chat push (`door_signature`)."""
