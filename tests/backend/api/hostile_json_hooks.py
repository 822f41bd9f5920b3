"""Schemathesis hooks for the hostile JSON run of tests/backend/api/test_api_contract.py
(loaded by `st` through SCHEMATHESIS_HOOKS; nothing else imports them).

Every request schemathesis makes with a JSON body goes out with a hostile body instead
(one of the values of tests/hostile_json.py in an object), taking them in turn for each
operation, so that an operation called often enough gets each of them; schemathesis's
own checks (no 5xx, a documented answer) then judge the answers. Each one sent is
written, one line per request, to the file PARLEY_TEST_HOSTILE_SENT names, so that the
test can check that every operation got every one.
"""

from __future__ import annotations

import itertools
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import schemathesis

from tests.hostile_json import HOSTILE_VALUES, in_object

SENT = Path(os.environ["PARLEY_TEST_HOSTILE_SENT"])
_NAMES = list(HOSTILE_VALUES)
_turns: defaultdict[str, itertools.count[int]] = defaultdict(itertools.count)


@schemathesis.hook
def before_call(
    context: schemathesis.HookContext, case: schemathesis.Case, kwargs: dict[str, Any]
) -> None:
    if case.media_type != "application/json":
        return
    operation = case.operation.label
    name = _NAMES[next(_turns[operation]) % len(_NAMES)]
    # A body passed here replaces the generated one; the Content-Type stays JSON.
    kwargs["data"] = in_object(HOSTILE_VALUES[name][0])
    with SENT.open("a", encoding="utf-8") as sent:
        sent.write(f"{operation}\t{name}\n")
