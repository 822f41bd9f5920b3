"""`parley run`: prepare the database and the model, then start and supervise the backend,
the action server and the Rasa server until Ctrl-C or until one of them dies.

`--profile scale` starts the scale profile's topology instead (backend/ops/
scale_profile.py): replicas behind the entry point, on PostgreSQL, Redis and RabbitMQ;
a replica that dies is started again while the others serve."""

from __future__ import annotations

import asyncio
import secrets
import signal
import sys
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TextIO

from aiohttp import web
from pydantic import SecretStr

from backend import data_files
from backend.api import tokens as api_tokens
from backend.api.tokens import Role
from backend.core import migrations_runner
from backend.core.clock import Clock, SystemClock
from backend.core.database import create_engine, create_session_factory
from backend.core.secret_key import SecretKeyMissing
from backend.core.settings import Settings
from backend.ops import entry_point, scale_profile
from backend.ops.rasa_project import RasaProject
from backend.ops.supervisor import (
    Service,
    ServiceFailed,
    Supervisor,
    http_ok,
    run_to_completion,
    say,
)
from backend.webchat import sessions as webchat

# Quiet the bot runtime's noisiest libraries; their warnings are not the operator's business.
BOT_RUNTIME_ENV = {
    "RASA_TELEMETRY_ENABLED": "false",
    "SQLALCHEMY_SILENCE_UBER_WARNING": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "PYTHONUNBUFFERED": "1",
    "PYTHONWARNINGS": "ignore::DeprecationWarning",
}

# Rasa serving: one model thread runs one small inference at a time (bot/model_thread.py),
# so TensorFlow's own thread pools only add hand-offs between threads. Measured with 16
# concurrent conversations: 15% more messages a second, sequential turns 8 ms faster.
# Not for training, which does use them.
RASA_SERVING_ENV = {
    "TF_INTER_OP_PARALLELISM_THREADS": "1",
    "TF_INTRA_OP_PARALLELISM_THREADS": "1",
}


class Profile(StrEnum):
    EMBEDDED = "embedded"
    SCALE = "scale"


class LaunchError(RuntimeError):
    """Something an operator must fix before Parley can start; the message says what."""


@dataclass(frozen=True)
class RunSecrets:
    rasa_token: str
    action_server_token: str
    backend_token: str
    twilio_auth_token: str
    # Signs web chat session tokens (backend) and checks them (Rasa's web chat channel).
    webchat_secret: str
    # Signs the local mail sink's simulated Mailgun events (unless one is set).
    mailgun_signing_key: str


async def prepare_database(settings: Settings, clock: Clock) -> RunSecrets:
    """Migrate the database and settle the secrets this run's processes share."""
    engine = create_engine(settings.resolved_database_url)
    try:
        await migrations_runner.upgrade(engine)
        async with create_session_factory(engine).begin() as session:
            if settings.backend_token is not None:
                token = await api_tokens.authenticate(
                    session, settings.backend_token.get_secret_value()
                )
                if token is None or token.role != Role.SERVICE:
                    raise LaunchError(
                        "PARLEY_BACKEND_TOKEN is not a live token with role 'service'. "
                        "Create one with: parley token create --role service --name actions"
                    )
                backend_token = settings.backend_token.get_secret_value()
            else:
                # This run mints its own; the previous run's are revoked.
                await api_tokens.revoke_ephemeral(session, clock)
                issued = await api_tokens.issue(
                    session, name="parley run: action server", role=Role.SERVICE,
                    clock=clock, ephemeral=True,
                )  # fmt: skip
                backend_token = issued.secret
    finally:
        await engine.dispose()
    return RunSecrets(
        rasa_token=_secret_or_new(settings.rasa_token),
        action_server_token=_secret_or_new(settings.action_server_token),
        backend_token=backend_token,
        # The local Twilio emulator's token is this run's own, like the others.
        twilio_auth_token=_secret_or_new(settings.twilio_auth_token),
        webchat_secret=_webchat_secret(settings),
        mailgun_signing_key=_secret_or_new(settings.mailgun_webhook_signing_key),
    )


def _webchat_secret(settings: Settings) -> str:
    # Not per run: derived from the installation's secret key (unless set), so a
    # visitor's chat survives a restart.
    try:
        return webchat.signing_secret(settings)
    except SecretKeyMissing as error:
        raise LaunchError(str(error)) from error


def _secret_or_new(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else secrets.token_urlsafe(32)


async def build_training_input(project: RasaProject, out: TextIO) -> None:
    """Generate what Rasa trains on from data/business.yml and data/catalog.yml."""
    code = await run_to_completion(
        project.build_command(), out, cwd=project.root, env=BOT_RUNTIME_ENV
    )
    if code != 0:
        raise LaunchError(f"building the training input failed (exit code {code}); see above")


async def ensure_model(project: RasaProject, out: TextIO, force: bool = False) -> Path:
    """The model for the current training data, trained first if it does not exist yet."""
    model = project.model_path()
    if model.exists() and not force:
        say(out, f"model {model.name} is up to date with data/, bot/domain/ and config.yml")
        return model
    say(out, f"training {model.name} (data, domain or config changed; this takes a few minutes)")
    await build_training_input(project, out)
    code = await run_to_completion(
        project.train_command(), out, cwd=project.root,
        env={**BOT_RUNTIME_ENV, **project.build_env()},
    )  # fmt: skip
    if code != 0 or not model.exists():
        raise LaunchError(f"training failed (rasa train exited with code {code}); see above")
    return model


def services(
    settings: Settings, project: RasaProject, model: Path, run: RunSecrets
) -> list[Service]:
    """The processes of one run: the local Twilio emulator (unless a real Twilio API URL
    is set) and the local mail sink (unless an SMTP server is set), then backend,
    action server and Rasa."""
    rasa_status = f"{settings.rasa_url}/status?token={run.rasa_token}"
    twilio = {"PARLEY_TWILIO_AUTH_TOKEN": run.twilio_auth_token}
    emulator = [
        Service(
            "twilio",
            [sys.executable, "-m", "backend", "twilio-emulator"],
            http_ok(f"{settings.resolved_twilio_api_url}/emulator/messages"),
            env={
                **twilio,
                # "A message comes in": the backend records the text and answers Twilio
                # at once, whatever the bot is doing (docs/channels.md).
                "PARLEY_TWILIO_SMS_WEBHOOK_URL": settings.sms_webhook_url,
                # "Primary handler fails": Rasa's SMS webhook records it the same way.
                "PARLEY_TWILIO_SMS_FALLBACK_URL": f"{settings.rasa_url}/webhooks/sms/webhook",
                "PARLEY_TWILIO_VOICE_WEBHOOK_URL": f"{settings.rasa_url}/webhooks/voice/call",
            },
            cwd=project.root,
        )
    ]
    mailgun = {"PARLEY_MAILGUN_WEBHOOK_SIGNING_KEY": run.mailgun_signing_key}
    sink = Service(
        "mail",
        [sys.executable, "-m", "backend", "mail-sink"],
        http_ok(f"{settings.url(settings.mail_sink_port)}/sink/emails"),
        # The sink plays the provider's bounces and complaints, signed as Mailgun signs.
        env={**mailgun, "PARLEY_MAILGUN_WEBHOOK_URL": f"{settings.backend_url}/webhooks/mailgun"},
        cwd=project.root,
    )
    return [
        *(emulator if settings.uses_twilio_emulator else []),
        *([sink] if settings.uses_mail_sink else []),
        Service(
            "backend",
            [sys.executable, "-m", "backend", "backend"],
            http_ok(f"{settings.backend_url}/health"),
            # To resume a conversation in Rasa when a person hands it back.
            env={
                "PARLEY_RASA_TOKEN": run.rasa_token,
                "PARLEY_WEBCHAT_SECRET": run.webchat_secret,
                **twilio,
                **(mailgun if settings.uses_mail_sink else {}),
            },
            cwd=project.root,
        ),
        Service(
            "actions",
            project.action_server_command(),
            http_ok(f"{settings.action_server_url}/health"),
            env={
                **BOT_RUNTIME_ENV,
                "PARLEY_HOST": settings.host,
                "PARLEY_ACTION_SERVER_PORT": str(settings.action_server_port),
                "PARLEY_ACTION_SERVER_TOKEN": run.action_server_token,
                "PARLEY_BACKEND_URL": settings.backend_url,
                "PARLEY_BACKEND_TOKEN": run.backend_token,
            },
            cwd=project.root,
        ),
        Service(
            "rasa",
            project.rasa_server_command(settings, model),
            http_ok(
                rasa_status,
                ready=lambda body: isinstance(body, dict) and bool(body.get("model_id")),
            ),
            env={
                **BOT_RUNTIME_ENV,
                **RASA_SERVING_ENV,
                **twilio,
                # Twilio's signatures cover the URL it calls, built from these.
                "PARLEY_HOST": settings.host,
                "PARLEY_RASA_PORT": str(settings.rasa_port),
                "PARLEY_RASA_TOKEN": run.rasa_token,
                "PARLEY_WEBCHAT_SECRET": run.webchat_secret,
                "PARLEY_ACTION_SERVER_URL": f"{settings.action_server_url}/webhook",
                "PARLEY_ACTION_SERVER_TOKEN": run.action_server_token,
                "PARLEY_RASA_TRACKER_STORE_URL": settings.resolved_tracker_store_url,
                # The SMS channel hands texts to the backend and sends replies through it.
                "PARLEY_BACKEND_URL": settings.backend_url,
                "PARLEY_BACKEND_TOKEN": run.backend_token,
            },
            cwd=project.root,
        ),
    ]


async def run(
    settings: Settings,
    out: TextIO = sys.stdout,
    clock: Clock | None = None,
    profile: Profile = Profile.EMBEDDED,
) -> int:
    """Run until Ctrl-C (exit 0) or until a process dies or cannot start (exit 1); in the
    scale profile, until a replica keeps dying as soon as it starts."""
    clock = clock or SystemClock()
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    stopping = False

    def on_signal(signum: int) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            say(out, f"{signal.Signals(signum).name}: stopping…")
            main.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)

    supervisor = Supervisor(out)
    entry: list[web.AppRunner] = []
    try:
        settings.var_path.mkdir(parents=True, exist_ok=True)
        if profile is Profile.SCALE:
            settings = await _scale_settings(settings, out)
        project = RasaProject.from_settings(settings)
        say(out, f"database: {_describe(settings.resolved_database_url)}")
        mistakes = data_files.validate(settings.data_path)
        if mistakes:
            raise LaunchError("data/ has mistakes:\n" + "\n".join(f"    {m}" for m in mistakes))
        run_secrets = await prepare_database(settings, clock)
        model = await ensure_model(project, out)
        if profile is Profile.SCALE:
            return await _run_scale(settings, project, model, run_secrets, supervisor, entry, out)
        *local, backend, actions, rasa = services(settings, project, model, run_secrets)

        # All at once, Rasa first: it takes longest to start (loading the model), and none
        # of the others needs another to be up before it starts (each waits for, or
        # retries, what it calls). Ready when all are.
        everything = [rasa, actions, backend, *local]  # local: the Twilio and mail stand-ins
        for service in everything:
            await supervisor.start(service)
        say(out, "loading the model into Rasa (about half a minute on 2 cores)…")
        await supervisor.wait_all_healthy(
            [service.name for service in everything], settings.startup_timeout
        )
        _announce(settings, out)
        failure = await supervisor.first_exit()
        _report(failure, out)
        return 1
    except asyncio.CancelledError:
        return 0
    except ServiceFailed as failure:
        _report(failure, out)
        return 1
    except LaunchError as error:
        say(out, f"error: {error}")
        return 1
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await supervisor.stop_all()
        await entry_point.stop(entry)
        say(out, "stopped")


async def _scale_settings(settings: Settings, out: TextIO) -> Settings:
    settings = scale_profile.settings_for(settings)
    try:
        created = await scale_profile.create_databases(settings)
    except (OSError, ValueError) as error:
        raise LaunchError(
            f"the scale profile needs the local PostgreSQL ({error}); docs/scaling.md"
        ) from error
    for name in created:
        say(out, f"created the PostgreSQL database {name}")
    return settings


async def _alive(_client: object) -> bool:
    """For processes without an HTTP listener: started is healthy (an early exit still
    fails the start)."""
    return True


def scale_services(
    settings: Settings, project: RasaProject, model: Path, run: RunSecrets
) -> tuple[list[Service], dict[str, tuple[str, int, list[str]]]]:
    """The scale profile's processes, in start order, and the entry point's services:
    each replica a copy of the embedded default's process on a port of its own."""
    *local, backend, actions, rasa = services(settings, project, model, run)
    assert settings.secret_key is not None  # scale_profile.settings_for sets it
    # RabbitMQ as both sides read it: Rasa publishes, the consumer reads.
    rabbitmq = {
        "PARLEY_RABBITMQ_HOST": settings.rabbitmq_host,
        "PARLEY_RABBITMQ_PORT": str(settings.rabbitmq_port),
        "PARLEY_RABBITMQ_USER": settings.rabbitmq_user,
        "PARLEY_RABBITMQ_PASSWORD": settings.rabbitmq_password.get_secret_value(),
        "PARLEY_EVENTS_QUEUE": settings.events_queue,
    }
    shared = {
        "PARLEY_DATABASE_URL": settings.resolved_database_url,
        "PARLEY_SECRET_KEY": settings.secret_key.get_secret_value(),
        **rabbitmq,
    }
    bot = {
        "PARLEY_REDIS_HOST": settings.redis_host,
        "PARLEY_WEBCHAT_REDIS_URL": f"redis://{settings.redis_host}:6379/1",
        **rabbitmq,
    }
    ports = iter(_free_ports(3 * settings.scale_replicas))
    started: list[Service] = list(local)
    upstreams: dict[str, list[str]] = {"backend": [], "rasa": []}
    for n in range(1, settings.scale_replicas + 1):
        port = next(ports)
        upstreams["backend"].append(settings.url(port))
        started.append(
            Service(
                f"backend-{n}", backend.argv, http_ok(f"{settings.url(port)}/health"),
                env={**backend.env, **shared, "PARLEY_BACKEND_LISTEN_PORT": str(port),
                     "PARLEY_SCHEDULER_ENABLED": "false"},
                cwd=backend.cwd,
            )
        )  # fmt: skip
    started.append(
        Service("events", [sys.executable, "-m", "backend", "consume-events"], _alive,
                env={**backend.env, **shared}, cwd=backend.cwd)
    )  # fmt: skip
    for n in range(1, settings.scale_replicas + 1):
        action_port, rasa_port = next(ports), next(ports)
        started.append(
            Service(
                f"actions-{n}", actions.argv, http_ok(f"{settings.url(action_port)}/health"),
                env={**actions.env, "PARLEY_ACTION_SERVER_PORT": str(action_port)},
                cwd=actions.cwd,
            )
        )  # fmt: skip
        replica = settings.model_copy(update={"rasa_port": rasa_port})
        upstreams["rasa"].append(settings.url(rasa_port))
        started.append(
            Service(
                f"rasa-{n}", project.rasa_server_command(replica, model),
                http_ok(
                    f"{settings.url(rasa_port)}/status?token={run.rasa_token}",
                    ready=lambda body: isinstance(body, dict) and bool(body.get("model_id")),
                ),
                # PARLEY_RASA_PORT stays the entry point's: webhook signatures cover it.
                env={**rasa.env, **bot,
                     "PARLEY_ACTION_SERVER_URL": f"{settings.url(action_port)}/webhook"},
                cwd=rasa.cwd,
            )
        )  # fmt: skip
    # Last: the scheduler's workers send follow-ups into Rasa's conversations.
    for n in range(1, scale_profile.WORKERS + 1):
        started.append(
            Service(f"worker-{n}", [sys.executable, "-m", "backend", "worker"], _alive,
                    env={**backend.env, **shared}, cwd=backend.cwd)
        )  # fmt: skip
    entry = {
        name: (settings.host, port, upstreams[name])
        for name, port in (("backend", settings.backend_port), ("rasa", settings.rasa_port))
    }
    return started, entry


def _free_ports(count: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


RESTARTS_WITHIN = 30.0  # a replica dying again this soon after starting…
MAX_QUICK_RESTARTS = 3  # …this many times in a row stops the run


async def _run_scale(
    settings: Settings,
    project: RasaProject,
    model: Path,
    run: RunSecrets,
    supervisor: Supervisor,
    entry: list[web.AppRunner],
    out: TextIO,
) -> int:
    started, routes = scale_services(settings, project, model, run)
    entry.extend(await entry_point.start(routes))
    # As in the embedded default: all at once, the Rasa replicas first (loading the model
    # takes longest); each process waits for, or retries, what it calls. The workers come
    # once the rest is ready, since what they send is recorded in Rasa's conversations.
    workers = [s for s in started if s.name.startswith("worker-")]
    first = sorted(
        (s for s in started if s not in workers), key=lambda s: not s.name.startswith("rasa-")
    )
    for service in first:
        await supervisor.start(service)
    say(out, "loading the model into each Rasa replica…")
    await supervisor.wait_all_healthy([s.name for s in first], settings.startup_timeout)
    for service in workers:
        await supervisor.start(service)
    _announce(settings, out)
    say(out, f"scale profile: {', '.join(s.name for s in started)} behind the entry point")
    quick: dict[str, int] = {}
    last_start: dict[str, float] = {}
    while True:
        failure = await supervisor.first_exit()
        _report(failure, out, then="the other replicas serve meanwhile")
        now = time.monotonic()
        quick[failure.name] = (
            quick.get(failure.name, 0) + 1
            if now - last_start.get(failure.name, 0.0) < RESTARTS_WITHIN
            else 1
        )
        if quick[failure.name] >= MAX_QUICK_RESTARTS:
            say(out, f"error: {failure.name} keeps dying as it starts; stopping the others.")
            return 1
        await asyncio.sleep(1)
        say(out, f"starting {failure.name} again")
        await supervisor.restart(failure.name)
        last_start[failure.name] = time.monotonic()


def _describe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _announce(settings: Settings, out: TextIO) -> None:
    rest = f"{settings.rasa_url}/webhooks/rest/webhook"
    lines = [
        "Parley is up.",
        f"  chat (Rasa REST channel)  {rest}",
        "    try: curl -s -H 'Content-Type: application/json' "
        f"""-d '{{"sender": "me", "message": "hi"}}' {rest}""",
        f"  web chat (demo page)      {settings.backend_url}/chat/demo",
        f'    embed it: <script src="{settings.backend_url}/chat" async></script>',
        f"  backend API               {settings.backend_url}/api/v1",
        *(
            [
                f"  local Twilio (emulator)   {settings.resolved_twilio_api_url}",
                "    text the bot: .venv/bin/parley sms +15551234567 'hi'",
            ]
            if settings.uses_twilio_emulator
            else []
        ),
        *(
            [f"  local mail (sink)         {settings.url(settings.mail_sink_port)}/sink"]
            if settings.uses_mail_sink
            else []
        ),
        f"  backend health            {settings.backend_url}/health",
        f"  action server             {settings.action_server_url}/health",
        "Press Ctrl-C to stop.",
    ]
    for line in lines:
        say(out, line)


def _report(failure: ServiceFailed, out: TextIO, then: str = "stopping the others") -> None:
    say(out, f"error: {failure.name} {failure.reason}; {then}.")
    if failure.last_lines:
        say(out, f"last lines from {failure.name}:")
        for line in failure.last_lines[-15:]:
            out.write(f"    {line}\n")
