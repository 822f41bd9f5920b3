"""The `parley` command line: run the whole service, train, validate, migrate, issue tokens."""

from __future__ import annotations

import asyncio
import gc
import secrets
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from backend import data_files
from backend.api import tokens as api_tokens
from backend.api.app import create_app
from backend.api.tokens import Role
from backend.console import users as console_users
from backend.core import migrations_runner
from backend.core.clock import SystemClock
from backend.core.database import create_engine, create_session_factory
from backend.core.identities import InvalidAddress, normalise_phone
from backend.core.models import ConsoleUser
from backend.core.secret_key import SecretKeyMissing
from backend.core.settings import Settings
from backend.data_files import DataFileInvalid
from backend.devtools.sms_client import EmulatorUnavailable, text_the_bot
from backend.ops import launcher, stand_ins
from backend.ops.consumer_process import run_consumer
from backend.ops.rasa_project import (
    BotRuntimeMissing,
    RasaProject,
    form_questions,
    unexpected_warnings,
)
from backend.ops.supervisor import run_to_completion
from backend.ops.worker_process import run_worker

T = TypeVar("T")


async def with_database(settings: Settings, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run `work` with an engine on the configured database, disposed afterwards."""
    engine = create_engine(settings.resolved_database_url)
    try:
        return await work(engine)
    finally:
        await engine.dispose()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def main(ctx: click.Context) -> None:
    """Parley: a conversational marketing chatbot service.

    Settings come from PARLEY_* environment variables and .env (see .env.example).
    """
    stand_ins.use_settings(ctx)


@main.command()
@click.option(
    "--profile",
    type=click.Choice([p.value for p in launcher.Profile]),
    default=launcher.Profile.EMBEDDED.value,
    show_default=True,
    help="embedded: one of each process, SQLite. scale: replicas behind one entry point, "
    "on the local PostgreSQL, Redis and RabbitMQ (docs/scaling.md).",
)
@click.pass_obj
def run(settings: Settings, profile: str) -> None:
    """Start backend, action server and Rasa server; stop them all with Ctrl-C."""
    sys.exit(asyncio.run(launcher.run(settings, profile=launcher.Profile(profile))))


@main.command()
@click.pass_obj
def backend(settings: Settings) -> None:
    """Serve the backend API alone (what `parley run` starts as its first process)."""

    _require_migrations(settings)
    try:
        app = create_app(settings)
    except DataFileInvalid as invalid:
        raise click.ClickException(f"data/ has mistakes:\n{invalid}") from invalid
    except SecretKeyMissing as error:
        raise click.ClickException(str(error)) from error
    app.on_startup.append(_freeze_heap)
    web.run_app(
        app,
        host=settings.host,
        port=settings.backend_listen_port or settings.backend_port,
        print=lambda _: None,
        access_log=None,
    )


async def _freeze_heap(_app: web.Application) -> None:
    """What exists once the backend has started lives as long as the process: the
    garbage collector's full collections need not walk it again. Walking it held the
    event loop for 130 to 210 ms each time (every text's acknowledgement waited)."""
    gc.collect()
    gc.freeze()


@main.command()
@click.pass_obj
def worker(settings: Settings) -> None:
    """Run follow-up sequences only: a scheduler worker with no HTTP listener.

    Run one or more next to API replicas started with PARLEY_SCHEDULER_ENABLED=false
    (this process runs its scheduler whatever that says). SIGTERM or Ctrl-C stops it
    after the round in progress.
    """
    _run_on_migrated_database(settings, run_worker)


@main.command(name="consume-events")
@click.pass_obj
def consume_events(settings: Settings) -> None:
    """Store Rasa's conversation events from RabbitMQ (the scale profile's event broker)
    and record the intents and completed forms in them.

    Reads PARLEY_RABBITMQ_URL, or PARLEY_RABBITMQ_HOST, _PORT, _USER and _PASSWORD
    (default amqp://guest:guest@127.0.0.1:5672/), and the queue PARLEY_EVENTS_QUEUE.
    Run one per queue. SIGTERM or Ctrl-C stops it after the batch in hand.
    """
    _run_on_migrated_database(settings, run_consumer)


def _run_on_migrated_database(
    settings: Settings, process: Callable[[Settings], Coroutine[Any, Any, None]]
) -> None:
    """Run a process of Parley's (a worker, the consumer) until it stops, once the
    database has every migration; data/ and secret key mistakes said plainly."""
    _require_migrations(settings)
    try:
        asyncio.run(process(settings))
    except DataFileInvalid as invalid:
        raise click.ClickException(f"data/ has mistakes:\n{invalid}") from invalid
    except SecretKeyMissing as error:
        raise click.ClickException(str(error)) from error


def _require_migrations(settings: Settings) -> None:
    missing = asyncio.run(with_database(settings, migrations_runner.pending))
    if missing:
        raise click.ClickException(
            f"the database lacks migrations {', '.join(missing)}: run 'parley db upgrade' first"
        )


@main.command()
@click.option("--force", is_flag=True, help="Train even if a model for this data exists.")
@click.pass_obj
def train(settings: Settings, force: bool) -> None:
    """Train the Rasa model if data/, bot/domain/ or config.yml changed."""
    project = RasaProject.from_settings(settings)
    try:
        model = asyncio.run(launcher.ensure_model(project, sys.stdout, force=force))
    except (launcher.LaunchError, BotRuntimeMissing) as error:
        raise click.ClickException(str(error)) from error
    click.echo(str(model))


@main.command()
@click.pass_obj
def validate(settings: Settings) -> None:
    """Check what marketers edit: scoring rules and segments, then (with `rasa data
    validate`) the dialogue data, domain and config."""
    mistakes = data_files.validate(settings.data_path)
    for mistake in mistakes:
        click.echo(str(mistake), err=True)
    if mistakes:
        raise click.ClickException(f"{len(mistakes)} mistake(s) in {settings.data_path}")
    click.echo("the business, scoring rules, segments and sequences are valid")
    project = RasaProject.from_settings(settings)

    output: list[str] = []

    async def go() -> int:
        await launcher.build_training_input(project, sys.stdout)
        return await run_to_completion(
            project.validate_command(), sys.stdout, project.root,
            {**launcher.BOT_RUNTIME_ENV, **project.build_env()}, keep=output,
        )  # fmt: skip

    try:
        code = asyncio.run(go())
    except (BotRuntimeMissing, launcher.LaunchError) as error:
        raise click.ClickException(str(error)) from error
    if code != 0:
        raise click.ClickException("rasa data validate found problems (see above)")
    warnings = unexpected_warnings("".join(output), form_questions(project.root / "bot/domain"))
    if warnings:
        for warning in warnings:
            click.echo(f"warning: {warning}", err=True)
        raise click.ClickException(f"rasa data validate gave {len(warnings)} warning(s)")
    click.echo("dialogue data, domain and config are valid")


main.add_command(stand_ins.twilio_emulator)
main.add_command(stand_ins.mail_sink)


@main.command()
@click.argument("sender")
@click.argument("text")
@click.option("--wait", default=60.0, show_default=True, help="seconds to wait for a reply")
@click.pass_obj
def sms(settings: Settings, sender: str, text: str, wait: float) -> None:
    """Text the bot from SENDER (a phone number) through the local Twilio emulator.

    Needs `make run` running; prints each text the bot sends back.
    """
    try:
        number = normalise_phone(sender, settings.default_phone_region)
    except InvalidAddress as error:
        raise click.BadParameter(str(error), param_hint="SENDER") from error
    if not settings.uses_twilio_emulator:
        raise click.ClickException(
            "PARLEY_TWILIO_API_URL points at a real Twilio: text the bot from a phone instead"
        )
    click.echo(f"{number} < {text}")
    try:
        replies = asyncio.run(
            text_the_bot(
                settings.resolved_twilio_api_url, number, settings.twilio_sms_number, text,
                sys.stdout, timeout=wait,
            )
        )  # fmt: skip
    except EmulatorUnavailable as error:
        raise click.ClickException(str(error)) from error
    if replies == 0:
        raise click.ClickException(f"no reply within {wait:g} s")


@main.group(name="test")
def test_group() -> None:
    """Test the trained model: dialogue test stories, the held-out NLU test set, and
    Parley's way of serving it."""


def _run_on_model(settings: Settings, command: Callable[[RasaProject, Path], list[str]]) -> int:
    project = RasaProject.from_settings(settings)

    async def go() -> int:
        model = await launcher.ensure_model(project, sys.stdout)
        return await run_to_completion(
            command(project, model), sys.stdout, project.root,
            {**launcher.BOT_RUNTIME_ENV, **project.build_env()},
        )  # fmt: skip

    try:
        return asyncio.run(go())
    except (BotRuntimeMissing, launcher.LaunchError) as error:
        raise click.ClickException(str(error)) from error


@test_group.command(name="stories")
@click.pass_obj
def test_stories(settings: Settings) -> None:
    """Run tests/stories through the model; any action it would not take fails."""
    out = settings.var_path / "results" / "stories"
    code = _run_on_model(settings, lambda project, model: project.test_stories_command(model, out))
    if code != 0:
        failed = out / "failed_test_stories.yml"
        raise click.ClickException(f"a test story failed (see above, and {failed})")
    click.echo("every test story passed")


@test_group.command(name="serving")
@click.pass_obj
def test_serving(settings: Settings) -> None:
    """Check that Parley's faster serving (tests/model) predicts what Rasa's code does."""
    code = _run_on_model(settings, lambda project, model: project.serving_test_command(model))
    if code != 0:
        raise click.ClickException("the model as Parley serves it differs from Rasa's (see above)")


@test_group.command(name="nlu")
@click.pass_obj
def test_nlu(settings: Settings) -> None:
    """Score the model on tests/nlu: fails below intent macro-F1 0.90 or entity F1 0.90."""
    report = settings.var_path / "results" / "nlu.json"
    code = _run_on_model(
        settings, lambda project, model: project.nlu_evaluation_command(model, report)
    )
    if code != 0:
        raise click.ClickException(f"the NLU test set failed its minimums (see above and {report})")


@main.group()
def db() -> None:
    """The backend's database."""


@db.command()
@click.pass_obj
def upgrade(settings: Settings) -> None:
    """Apply every pending migration."""

    async def go(engine: AsyncEngine) -> list[str]:
        missing = await migrations_runner.pending(engine)
        await migrations_runner.upgrade(engine)
        return missing

    applied = asyncio.run(with_database(settings, go))
    click.echo(f"applied {', '.join(applied)}" if applied else "the database is up to date")


@main.group()
def user() -> None:
    """People who sign in to the console (/console)."""


@user.command("create")
@click.option("--email", required=True, help="What they sign in with.")
@click.option("--role", type=click.Choice(console_users.ROLES), required=True)
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input (scripts)."
)
@click.option("--generate-password", is_flag=True, help="Make a strong password and print it once.")
@click.pass_obj
def user_create(
    settings: Settings, email: str, role: str, password_stdin: bool, generate_password: bool
) -> None:
    """Make a console account. The password is asked for, read from standard input, or
    made and printed once; never an argument (it would stay in the shell's history)."""
    if password_stdin and generate_password:
        raise click.UsageError("give --password-stdin or --generate-password, not both")
    if generate_password:
        password = secrets.token_urlsafe(15)
    elif password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)

    async def go(engine: AsyncEngine) -> str:
        await migrations_runner.upgrade(engine)
        async with create_session_factory(engine).begin() as session:
            made = await console_users.create(session, SystemClock(), email, role, password)
            return made.email

    try:
        made = asyncio.run(with_database(settings, go))
    except console_users.UserRefused as refused:
        raise click.ClickException(str(refused)) from refused
    where = (settings.public_url or settings.backend_url).rstrip("/")
    click.echo(f"{made} may sign in at {where}/console as {role}")
    if generate_password:
        click.echo(f"password: {password}")
        click.echo("(shown once: store it now)", err=True)


def _set_disabled(settings: Settings, email: str, disabled: bool) -> str:
    async def go(engine: AsyncEngine) -> str:
        await migrations_runner.upgrade(engine)
        async with create_session_factory(engine).begin() as session:
            account = await console_users.set_disabled(session, SystemClock(), email, disabled)
            return account.email

    try:
        return asyncio.run(with_database(settings, go))
    except console_users.UserRefused as refused:
        raise click.ClickException(str(refused)) from refused


@user.command("disable")
@click.option("--email", required=True)
@click.pass_obj
def user_disable(settings: Settings, email: str) -> None:
    """Stop an account signing in; a session it holds ends at its next request. Its
    name stays on what it did (audit log, hand-offs)."""
    click.echo(f"{_set_disabled(settings, email, True)} is disabled")


@user.command("enable")
@click.option("--email", required=True)
@click.pass_obj
def user_enable(settings: Settings, email: str) -> None:
    """Let a disabled (or locked) account sign in again."""
    click.echo(f"{_set_disabled(settings, email, False)} may sign in again")


@user.command("list")
@click.pass_obj
def user_list(settings: Settings) -> None:
    """Console accounts: e-mail, role, and whether locked or disabled."""

    async def go(engine: AsyncEngine) -> list[ConsoleUser]:
        await migrations_runner.upgrade(engine)
        async with create_session_factory(engine)() as session:
            return list(await session.scalars(select(ConsoleUser).order_by(ConsoleUser.email)))

    for account in asyncio.run(with_database(settings, go)):
        state = "disabled" if account.disabled_at else ""
        click.echo(f"{account.email:<40} {account.role:<9} {state}".rstrip())


@main.group()
def token() -> None:
    """API tokens."""


@token.command("create")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--name", default=None, help="What the token is for, e.g. 'action server'.")
@click.pass_obj
def token_create(settings: Settings, role: str, name: str | None) -> None:
    """Issue a token; it is printed once and only its hash is kept."""

    async def go(engine: AsyncEngine) -> str:
        await migrations_runner.upgrade(engine)
        async with create_session_factory(engine).begin() as session:
            issued = await api_tokens.issue(
                session, name=name or f"{role} token", role=Role(role), clock=SystemClock()
            )
            return issued.secret

    secret = asyncio.run(with_database(settings, go))
    click.echo(secret)
    click.echo(f"(role {role}; shown once: store it now)", err=True)


@token.command("list")
@click.pass_obj
def token_list(settings: Settings) -> None:
    """The tokens that still work: prefix, role, name, created."""

    async def go(engine: AsyncEngine) -> list[tuple[str, str, str, str]]:
        await migrations_runner.upgrade(engine)
        async with create_session_factory(engine)() as session:
            return [
                (t.prefix, t.role, t.name, t.created_at.isoformat(timespec="seconds"))
                for t in await api_tokens.live(session)
            ]

    for prefix, role, name, created in asyncio.run(with_database(settings, go)):
        click.echo(f"{prefix}…  {role:<9} {created}  {name}")


@token.command("revoke")
@click.argument("prefix")
@click.pass_obj
def token_revoke(settings: Settings, prefix: str) -> None:
    """Revoke the token that starts with PREFIX (as `parley token list` shows it)."""
    if len(prefix) < 6:
        raise click.ClickException("give at least the first 6 characters of the token")

    async def go(engine: AsyncEngine) -> int:
        async with create_session_factory(engine).begin() as session:
            return len(await api_tokens.revoke(session, prefix, SystemClock()))

    matching = asyncio.run(with_database(settings, go))
    if matching != 1:
        raise click.ClickException(f"{matching} live tokens start with {prefix!r}: nothing revoked")
    click.echo(f"revoked {prefix}…")
