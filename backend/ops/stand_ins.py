"""The local stand-ins for Twilio and an e-mail provider, as commands (`parley
twilio-emulator`, `parley mail-sink`).

`parley run` starts each in a process of its own beside every run, as `python -m
backend twilio-emulator` and `python -m backend mail-sink`; backend/__main__.py runs
them from here, without the rest of the command line's imports (the API, the
migrations, the launcher): about 40 MB a process instead of 110.
"""

from __future__ import annotations

import asyncio

import click
from aiohttp import web

from backend.core.logs import configure as configure_logs
from backend.core.settings import Settings
from backend.devtools.mail_sink import MailSink
from backend.devtools.twilio_emulator import TwilioEmulator


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def stand_ins(ctx: click.Context) -> None:
    """Parley's local stand-ins for Twilio and an e-mail provider."""
    use_settings(ctx)


def use_settings(ctx: click.Context) -> None:
    """How every `parley` command starts: the settings read once, logging set up."""
    settings = Settings()
    configure_logs(settings.log_level, settings.log_format)
    ctx.obj = settings


@click.command(name="twilio-emulator")
@click.option(
    "--no-status-callbacks",
    is_flag=True,
    help="Move texts through their statuses without making their status callbacks (for "
    "benchmarks that run no API to receive them).",
)
@click.pass_obj
def twilio_emulator(settings: Settings, no_status_callbacks: bool) -> None:
    """Play Twilio locally (send messages, status callbacks, a person's texts and calls)."""
    token = settings.twilio_auth_token
    if token is None:
        raise click.ClickException(
            "set PARLEY_TWILIO_AUTH_TOKEN (any string) so requests can be signed and checked"
        )
    emulator = TwilioEmulator(
        settings.twilio_account_sid,
        token.get_secret_value(),
        settings.twilio_sms_webhook_url,
        voice_webhook_url=settings.twilio_voice_webhook_url,
        sms_fallback_url=settings.twilio_sms_fallback_url,
        status_callbacks=not no_status_callbacks,
    )
    click.echo(
        f"Twilio emulator on http://{settings.host}:{settings.twilio_emulator_port} "
        f"(account {settings.twilio_account_sid})"
    )
    web.run_app(emulator.app(), host=settings.host, port=settings.twilio_emulator_port, print=None)


@click.command(name="mail-sink")
@click.pass_obj
def mail_sink(settings: Settings) -> None:
    """A local mail server that keeps every e-mail Parley sends, with a page to read them."""
    asyncio.run(_run_mail_sink(settings))


async def _run_mail_sink(settings: Settings) -> None:
    key = settings.mailgun_webhook_signing_key
    sink = MailSink(
        mailgun=(settings.mailgun_webhook_url, key.get_secret_value())
        if key is not None and settings.mailgun_webhook_url
        else None
    )
    loop = asyncio.get_running_loop()
    smtp = await loop.create_server(sink.smtp, settings.host, settings.mail_sink_smtp_port)
    runner = web.AppRunner(sink.app())
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.mail_sink_port).start()
    click.echo(
        f"mail sink: SMTP on {settings.host}:{settings.mail_sink_smtp_port}, e-mails at "
        f"http://{settings.host}:{settings.mail_sink_port}/sink"
    )
    try:
        await asyncio.Event().wait()  # until the process is stopped
    finally:
        smtp.close()
        await runner.cleanup()


stand_ins.add_command(twilio_emulator)
stand_ins.add_command(mail_sink)
