"""`parley sms`: text the bot through the local Twilio emulator, as a person would, and
print what it texts back."""

from __future__ import annotations

import asyncio
from typing import Any, TextIO

import aiohttp


class EmulatorUnavailable(RuntimeError):
    """The emulator is not running or refused the text; the message says what to do."""


async def text_the_bot(
    emulator_url: str,
    sender: str,
    to: str,
    body: str,
    out: TextIO,
    timeout: float = 60.0,
    quiet: float = 2.0,
) -> int:
    """Send `body` from `sender`, print each reply as it arrives; the number of replies.

    Waits up to `timeout` seconds for the first reply and `quiet` seconds after each."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        try:
            before = {m["sid"] for m in await _sent(session, emulator_url)}
            async with session.post(
                f"{emulator_url}/emulator/sms", json={"from": sender, "to": to, "body": body}
            ) as response:
                answer = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise EmulatorUnavailable(
                f"the local Twilio emulator at {emulator_url} is not answering ({error}); "
                "is `make run` (or `parley run`) running?"
            ) from error
        if response.status != 200:
            raise EmulatorUnavailable(f"the emulator refused the text: {answer}")
        if not answer.get("acknowledged"):
            raise EmulatorUnavailable(
                f"the text was not taken: the SMS webhook answered {answer.get('webhook_status')}"
                f" and the fallback {answer.get('fallback_status')}: "
                f"{str(answer.get('webhook_body'))[:200]}"
            )
        if answer.get("webhook_status") != 200:
            out.write("(Rasa did not take the text; the backend kept it through Twilio's "
                      "fallback, and the bot answers it once Rasa is back)\n")  # fmt: skip
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        replies = 0
        while loop.time() < deadline:
            await asyncio.sleep(0.2)
            for message in await _sent(session, emulator_url):
                if message["sid"] in before or message["to"] != sender:
                    continue
                before.add(message["sid"])
                replies += 1
                for line in (message["body"] or "").splitlines() or [""]:
                    out.write(f"{to} > {line}\n")
                for url in message.get("media_urls", []):
                    out.write(f"{to} > [image] {url}\n")
                out.flush()
                deadline = loop.time() + quiet
        return replies


async def _sent(session: aiohttp.ClientSession, emulator_url: str) -> list[dict[str, Any]]:
    async with session.get(f"{emulator_url}/emulator/messages") as response:
        messages: list[dict[str, Any]] = await response.json()
        return messages
