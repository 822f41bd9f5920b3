"""Every way Parley can send something to a person, found in the code itself, goes
through one of the doors, and every door applies consent and the guards.

The paths out are Twilio's REST API (texts and calls) and Rasa's HTTP API with an
output channel (a message pushed to a web page, or texted by the SMS channel). This
test reads the source of both runtimes and fails when a new caller of either appears
outside the doors, or when a door stops asking the guards."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from backend.core.settings import PROJECT_ROOT

# Both runtimes' code; the local Twilio emulator and migrations send nothing to anyone.
SOURCES = ["backend", "bot", "actions", "channels", "message_rules"]
NOT_SENDERS = {"backend/devtools", "backend/migrations"}


def modules() -> Iterator[tuple[str, ast.Module]]:
    for root in SOURCES:
        for path in sorted((PROJECT_ROOT / root).rglob("*.py")):
            relative = path.relative_to(PROJECT_ROOT).as_posix()
            if any(relative.startswith(skip) for skip in NOT_SENDERS):
                continue
            yield relative, ast.parse(path.read_text(), relative)


def calls(tree: ast.AST) -> Iterator[ast.Call]:
    yield from (node for node in ast.walk(tree) if isinstance(node, ast.Call))


def attribute_chain(node: ast.expr) -> list[str]:
    """`self.client.messages.create_async` -> ["self", "client", "messages", "create_async"]."""
    names: list[str] = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        names.append(node.id)
    return names[::-1]


def strings(tree: ast.AST) -> Iterator[str]:
    """The string constants of the code, docstrings left out."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            yield node.value


def functions_calling(predicate: object) -> dict[str, set[str]]:
    """module -> names of the functions (Class.method) holding a call that matches."""
    found: dict[str, set[str]] = {}
    for module, tree in modules():
        for cls in [None, *[n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]]:
            body = tree.body if cls is None else cls.body
            for function in body:
                if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                if any(predicate(call) for call in calls(function)):  # type: ignore[operator]
                    name = function.name if cls is None else f"{cls.name}.{function.name}"
                    found.setdefault(module, set()).add(name)
    return found


def test_only_the_twilio_views_call_twilios_api_to_send() -> None:
    """Creating a message or a call at Twilio: only the library's two views do it."""

    def creates_at_twilio(call: ast.Call) -> bool:
        chain = attribute_chain(call.func)
        return (
            chain[-1:] in (["create"], ["create_async"])
            and "client" in chain
            and ("messages" in chain[:-1] or "calls" in chain[:-1])
        )

    assert functions_calling(creates_at_twilio) == {
        "backend/messaging/twilio_api.py": {"TwilioTexts.create", "TwilioCalls.create"}
    }


def test_only_the_sms_and_call_doors_use_the_twilio_views_to_send() -> None:
    def sends_through_a_view(call: ast.Call) -> bool:
        chain = attribute_chain(call.func)
        return chain[-1:] == ["create"] and chain[-2:-1] in (["texts"], ["calls"])

    assert functions_calling(sends_through_a_view) == {
        "backend/messaging/sms_door.py": {"SmsDoor._deliver_part"},
        "backend/messaging/call_door.py": {"CallDoor._place"},
    }


def test_no_other_code_reaches_twilio_or_builds_its_own_client() -> None:
    for module, tree in modules():
        imported = {
            alias.name if isinstance(node, ast.Import) else f"{node.module}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        }
        if module == "backend/messaging/twilio_api.py":
            continue  # the one client (and its default address)
        assert not any(name.startswith("twilio.rest") for name in imported), module
        assert not any("api.twilio.com" in text for text in strings(tree)), module


def test_only_the_web_door_pushes_through_rasas_api() -> None:
    """Rasa sends a message to a channel when asked with `output_channel`; only the
    web door asks (the SMS channel's own output channel, which Rasa's API would use for
    `?output_channel=sms`, sends through the SMS door as marketing: test_sms_channel)."""

    def pushes(call: ast.Call) -> bool:
        return any(
            keyword.arg == "output_channel"
            and not (isinstance(keyword.value, ast.Constant) and keyword.value.value is None)
            for keyword in call.keywords
        )

    found = functions_calling(pushes)
    found.get("backend/conversations/rasa_client.py", set()).discard(
        "RasaClient.record_follow_up"  # passes its caller's choice on to append_events
    )
    assert {m: f for m, f in found.items() if f} == {
        "backend/messaging/web_door.py": {"WebDoor.push"},
    }
    for module, tree in modules():
        if any(
            word in text
            for text in strings(tree)
            for word in ("execute_side_effects", "trigger_intent", "/execute")
        ):
            assert module == "backend/conversations/rasa_client.py", module


def test_every_door_asks_the_guards_and_consent_before_it_sends() -> None:
    doors = {
        "backend/messaging/sms_door.py": "SmsDoor.send_many",
        "backend/messaging/call_door.py": "CallDoor.call",
        "backend/messaging/web_door.py": "WebDoor.push",
    }
    for module, method in doors.items():
        asks = functions_calling(
            lambda call: attribute_chain(call.func)[-2:] == ["self", "_guard"]
        ).get(module, set())
        assert method in asks, f"{method} does not ask the guards"
        checks = functions_calling(
            lambda call: (
                attribute_chain(call.func)[-3:] == ["self", "guard", "check"]
                or (attribute_chain(call.func)[-1:] == ["guard_one"])
            )
        ).get(module, set())
        assert checks == {method.split(".")[0] + "._guard"}, module
    consent = functions_calling(
        lambda call: (
            attribute_chain(call.func)[-1:] in (["require_consent"], ["refuse_unless_allowed"])
        )
    )
    assert {m: consent.get(m, set()) & {d} for m, d in doors.items()} == {
        m: {d} for m, d in doors.items()
    }


def test_every_channel_that_rasas_api_can_push_through_is_guarded() -> None:
    """Rasa's HTTP API sends through a channel's own output channel (`get_output_channel`)
    outside any turn. Two channels have one: the SMS channel's sends through the SMS
    door as marketing, the web chat's only what the web door signed (their tests:
    tests/bot/test_sms_channel.py, tests/bot/test_webchat_channel.py). A new one needs
    the same before it is added here."""
    owners = {
        (module, cls.name)
        for module, tree in modules()
        for cls in ast.walk(tree)
        if isinstance(cls, ast.ClassDef)
        for function in cls.body
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
        and function.name == "get_output_channel"
    }
    assert owners == {("channels/sms.py", "SmsInput"), ("channels/webchat.py", "WebChatInput")}
