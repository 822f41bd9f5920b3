"""Rasa's entry point (bot/rasa_server.py): what it keeps out of the process."""

from __future__ import annotations

import subprocess
import sys

from bot.settings import PROJECT_ROOT

PROBE = """
import sys
from bot.rasa_server import leave_out_jax
leave_out_jax()
import tensorflow as tf
import rasa.core.agent
print(sorted(name for name in sys.modules if name.split(".")[0] in ("jax", "jaxlib")
             and sys.modules[name] is not None))
print(int(tf.reduce_sum(tf.constant([1, 2, 3]))))
"""


def test_tensorflow_and_rasa_load_and_run_without_jax() -> None:
    """JAX (66 MB, a third of TensorFlow's import time) stays out of Rasa's process, and
    TensorFlow still computes."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=PROJECT_ROOT, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["[]", "6"]
