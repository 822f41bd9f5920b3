"""`rasa` with its HTTP API token taken from PARLEY_RASA_TOKEN.

`python -m bot.rasa_server run --enable-api ...` is `rasa run ...`, except that the
token is added here, inside the process, so it never appears on a command line that
`ps` would show. Without PARLEY_RASA_TOKEN the API is refused rather than left open.
The model runs beside the event loop (bot/model_thread.py), so that webhooks are
answered while it thinks, and every JSON body is checked before Rasa reads it
(bot/json_guard.py), so that hostile JSON gets a 400 instead of a 500. A tracker store
that fails fails the turn, instead of Rasa's silent fall-back to an empty conversation
kept in memory (bot/tracker_store.py). Each custom action's result is checked against
Rasa's schema by a validator built once instead of once per result
(bot/action_results.py), the model is loaded for serving without the training step
Rasa's loader runs first (bot/model_loading.py), and a prediction a rule decides does
not run the other policies (bot/rules_first.py). JAX, which TensorFlow's pip package
brings and its TF Lite converter imports when it is there, is kept out of the process
(`leave_out_jax`): neither Rasa nor Parley uses it, and it cost 66 MB and about a third
of the time to import TensorFlow.
"""

from __future__ import annotations

import sys

from bot.settings import settings


def leave_out_jax() -> None:
    """Make `import jax` fail in this process, as if it were not installed: TensorFlow
    then leaves out only its JAX-to-TF-Lite conversion, which nothing here uses."""
    sys.modules["jax"] = None  # type: ignore[assignment]


def main() -> None:
    args = sys.argv[1:]
    if "--enable-api" in args:
        token = settings().rasa_token
        if token is None:
            sys.exit("PARLEY_RASA_TOKEN must be set: Rasa's HTTP API is never served without one")
        args += ["--auth-token", token.get_secret_value()]

    leave_out_jax()
    from rasa.__main__ import main as rasa_main

    from bot import (
        action_results,
        json_guard,
        model_loading,
        model_thread,
        rules_first,
        tracker_store,
    )

    action_results.install()
    model_loading.install()
    rules_first.install()
    model_thread.install()
    json_guard.install()
    tracker_store.install()
    sys.argv = ["rasa", *args]
    rasa_main()


if __name__ == "__main__":
    main()
