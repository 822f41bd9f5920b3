"""The backend's aiohttp application."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

from aiohttp import web

from backend import data_files
from backend.api import openapi
from backend.api import route_table as routes
from backend.api.auth import auth_middleware
from backend.api.bodies import MAX_BODY_BYTES
from backend.api.keys import (
    BUSINESS_TEXTS,
    CALL_DOOR,
    CLOCK,
    DESK,
    DIRECTORY,
    EMAIL_DOOR,
    EMAIL_REPLIES,
    ENGINE,
    FILE_SEGMENTS,
    HELD,
    INBOX,
    KEYWORD_REPLIES,
    MAILGUN,
    PRIVACY,
    RASA,
    RETENTION,
    SCORING,
    SEQUENCES,
    SESSIONS,
    SETTINGS,
    SMS_DOOR,
    TEXT_TURNS,
    WEB_DOOR,
    WORKER,
)
from backend.api.problems import problem_middleware
from backend.consent import email_confirmation, unsubscribe
from backend.console import routes as console
from backend.conversations.rasa_client import RasaClient
from backend.core import secret_key
from backend.core.clock import Clock, SystemClock
from backend.core.database import create_engine, create_session_factory, one_starting_at_a_time
from backend.core.logs import get_logger
from backend.core.settings import Settings
from backend.events.recording import EventRecorder
from backend.handoffs.desk import Desk
from backend.handoffs.email_replies import EmailReplies
from backend.messaging.call_door import CallDoor
from backend.messaging.email_door import EmailDoor
from backend.messaging.email_inbound import EmailInbox
from backend.messaging.email_message import Dkim, Sender
from backend.messaging.guards import ContactGuard
from backend.messaging.held import Deliver, HeldMessages
from backend.messaging.inbound import KeywordConfirmations, KeywordReplies, SmsInbox
from backend.messaging.mailgun import MailgunWebhook
from backend.messaging.pacing import SendingPace
from backend.messaging.sms_door import SmsDoor
from backend.messaging.smtp import Mailer
from backend.messaging.text_turns import BotTurns, TextTurns
from backend.messaging.twilio_api import TwilioCalls, TwilioTexts, twilio_client
from backend.messaging.web_door import WebDoor
from backend.people.privacy import Privacy
from backend.people.profiles import ProfileDirectory
from backend.people.retention import Retention
from backend.scoring import rules as scoring
from backend.segments import store as segment_store
from backend.sequences.scheduler.worker import Worker
from backend.webchat import routes as webchat
from backend.webchat.sessions import signing_secret

log = get_logger(__name__)
# Seconds to wait for Twilio's API before a send's outcome is unknown.
TWILIO_TIMEOUT = 10.0


def create_app(settings: Settings, clock: Clock | None = None) -> web.Application:
    """The backend, ready to serve. Raises `data_files.DataFileInvalid` if data/ has
    mistakes and `secret_key.SecretKeyMissing` if a shared database has no key."""
    clock = clock or SystemClock()
    rules = data_files.load_scoring(settings.data_path)
    app = web.Application(
        # The web chat's CORS headers go on every answer, problems included.
        middlewares=[webchat.cors_middleware, problem_middleware, auth_middleware],
        client_max_size=MAX_BODY_BYTES,
    )
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app[SCORING] = rules
    app[FILE_SEGMENTS] = data_files.load_segments(settings.data_path)
    app[SEQUENCES] = data_files.load_sequences(settings.data_path)
    key = secret_key.load_or_create(settings)
    app[DIRECTORY] = ProfileDirectory(clock=clock, rules=rules, erasure_key=key)
    app[RASA] = RasaClient(
        settings.resolved_rasa_api_url,
        settings.rasa_token.get_secret_value() if settings.rasa_token else None,
    )
    app[BUSINESS_TEXTS] = business = data_files.load_business_texts(settings.data_path)
    app[KEYWORD_REPLIES] = KeywordReplies.for_business(business.name, business.sms_help)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_texting)
    app.cleanup_ctx.append(_scheduler)
    webchat.install(app, settings, clock)
    routes.register(app)
    openapi.install(app, routes.ROUTES)
    app.add_subapp(
        "/console",
        console.console_app(key, settings.console_secure_cookie),
    )
    return app


async def _database(app: web.Application) -> AsyncIterator[None]:
    engine = create_engine(app[SETTINGS].resolved_database_url)
    app[ENGINE] = engine
    app[SESSIONS] = sessions = create_session_factory(engine)
    now = app[CLOCK].now()
    async with sessions.begin() as session:
        await one_starting_at_a_time(session)
        if await scoring.ensure_current(session, app[SCORING], now):
            log.info("scores.rebuilt", reason="scoring rules changed")
        synced = await segment_store.sync_files(session, app[FILE_SEGMENTS], now)
        if synced.added or synced.changed or synced.removed:
            log.info(
                "segments.synced",
                added=synced.added,
                changed=synced.changed,
                removed=synced.removed,
            )
    yield
    await app[RASA].close()
    await engine.dispose()


async def _texting(app: web.Application) -> AsyncIterator[None]:
    """The SMS and call doors (through Twilio, or the local emulator), the inbox, and
    the task that answers every text recorded in it (backend.messaging.text_turns)."""
    settings, clock, sessions = app[SETTINGS], app[CLOCK], app[SESSIONS]
    business = app[BUSINESS_TEXTS]
    guard = ContactGuard(business.follow_ups, business.timezone)
    texts = None
    if settings.twilio_auth_token is not None:
        texts = TwilioTexts(
            twilio_client(
                settings.twilio_account_sid,
                settings.twilio_auth_token.get_secret_value(),
                settings.resolved_twilio_api_url,
                timeout=TWILIO_TIMEOUT,
            )
        )
        app[SMS_DOOR] = SmsDoor(
            sessions=sessions,
            clock=clock,
            directory=app[DIRECTORY],
            texts=texts,
            pace=SendingPace(sessions, clock, settings.sms_sends_per_second, settings.sms_max_wait),
            guard=guard,
            sender=settings.twilio_sms_number,
            status_callback_url=settings.status_callback_url,
            in_flight=timedelta(seconds=settings.sms_max_wait + TWILIO_TIMEOUT + 5),
        )
        # The door for calls shares the Twilio client (closed with `texts` below).
        app[CALL_DOOR] = CallDoor(
            sessions=sessions,
            clock=clock,
            directory=app[DIRECTORY],
            calls=TwilioCalls(texts.client),
            guard=guard,
            caller_id=settings.caller_id,
            status_callback_url=settings.call_status_callback_url,
            gather_url=settings.voice_gather_url,
            in_flight=timedelta(seconds=TWILIO_TIMEOUT + 20),
        )
    else:
        log.warning("sms.not_configured", reason="PARLEY_TWILIO_AUTH_TOKEN is not set")
    if settings.rasa_token:
        app[WEB_DOOR] = WebDoor(
            sessions=sessions, clock=clock, directory=app[DIRECTORY], guard=guard,
            conversations=app[RASA], secret=signing_secret(settings),
        )  # fmt: skip
    app[EMAIL_DOOR] = email_door(settings, app, guard)
    if settings.mailgun_webhook_signing_key is not None:
        app[MAILGUN] = MailgunWebhook(settings.mailgun_webhook_signing_key.get_secret_value())
    deliver: dict[str, Deliver] = {}
    for channel, door in (("sms", app.get(SMS_DOOR)), ("voice", app.get(CALL_DOOR)),
                          ("web", app.get(WEB_DOOR)), ("email", app[EMAIL_DOOR])):  # fmt: skip
        if door is not None:
            deliver[channel] = door.deliver_held
    app[HELD] = HeldMessages(sessions, clock, deliver)
    app[PRIVACY] = Privacy(sessions, clock, app[DIRECTORY], app[RASA], app[SCORING])
    app[DESK] = Desk(
        sessions, clock, app.get(WEB_DOOR), app.get(SMS_DOOR), app[RASA], app[EMAIL_DOOR]
    )
    app[EMAIL_REPLIES] = EmailReplies(
        sessions, clock, EmailInbox(sessions, clock, app[DIRECTORY]), app[RASA]
    )
    app[RETENTION] = Retention(
        sessions, clock, business.retention, app[RASA] if settings.rasa_token else None
    )
    app[INBOX] = inbox = SmsInbox(sessions, clock, app[DIRECTORY])
    app[TEXT_TURNS] = turns = TextTurns(
        sessions=sessions,
        clock=clock,
        keywords=KeywordConfirmations(app.get(SMS_DOOR), app[KEYWORD_REPLIES]),
        bot=(
            BotTurns(
                app[RASA],
                timeout=max(1.0, settings.sms_turn_lease_seconds - 5),
                attach_profile=inbox.attach_profile,
            )
            if settings.rasa_token
            else None
        ),
        concurrency=settings.sms_concurrent_turns,
        lease=timedelta(seconds=settings.sms_turn_lease_seconds),
        max_attempts=settings.sms_turn_max_attempts,
    )
    inbox.on_recorded = turns.nudge
    stop = asyncio.Event()
    task = asyncio.create_task(turns.run(stop), name="text-turns")
    yield
    stop.set()
    turns.nudge()
    try:
        await asyncio.wait_for(task, 10)
    except TimeoutError:
        task.cancel()
    if texts is not None:
        await texts.close()


def email_door(settings: Settings, app: web.Application, guard: ContactGuard) -> EmailDoor:
    """The e-mail door: to the SMTP server settings name (the local sink by default),
    from the business as data/business.yml names it, DKIM-signed when configured."""
    business, sessions, clock = app[BUSINESS_TEXTS], app[SESSIONS], app[CLOCK]
    key = app[DIRECTORY].erasure_key  # the installation's secret key, read once at start
    dkim = None
    if settings.dkim_domain and settings.dkim_selector and settings.dkim_private_key_file:
        dkim = Dkim.from_file(
            settings.dkim_domain, settings.dkim_selector,
            settings.path(settings.dkim_private_key_file),
        )  # fmt: skip
    return EmailDoor(
        sessions=sessions, clock=clock, directory=app[DIRECTORY], guard=guard,
        mailer=Mailer.from_settings(settings),
        pace=SendingPace(
            sessions, clock, settings.email_domain_per_second, settings.email_max_wait
        ),
        sender=Sender(
            business.name, settings.email_from or business.contact_email or "",
            business.address or "",
        ),
        public_url=settings.public_url or settings.backend_url,
        unsubscribe_key=unsubscribe.signing_key(key),
        confirmation_key=email_confirmation.signing_key(key),
        dkim=dkim,
        in_flight=timedelta(seconds=settings.email_max_wait + settings.smtp_timeout_seconds + 5),
    )  # fmt: skip


def scheduler_worker(app: web.Application) -> Worker:
    """The follow-up sequences' worker, with the app's clock, door and settings."""
    settings = app[SETTINGS]
    sequences = app[SEQUENCES]
    return Worker(
        sessions=app[SESSIONS],
        clock=app[CLOCK],
        sequences={s.name: s for s in sequences},
        directory=app[DIRECTORY],
        door=app.get(SMS_DOOR),
        calls=app.get(CALL_DOOR),
        business=app[BUSINESS_TEXTS].model_dump(),
        record_points=EventRecorder(app[DIRECTORY], sequences).record_points,
        conversations=app[RASA] if settings.rasa_token else None,
        web=app.get(WEB_DOOR),
        emails=app.get(EMAIL_DOOR),
        held=app[HELD],
        retention=app[RETENTION],
        rules=app[BUSINESS_TEXTS].follow_ups,
        batch=settings.scheduler_batch,
        sweep_every=timedelta(seconds=settings.segment_sweep_seconds),
        concurrency=(1 if app[ENGINE].dialect.name == "sqlite" else settings.scheduler_concurrency),
        lease=timedelta(seconds=settings.scheduler_lease_seconds),
        poll_seconds=settings.scheduler_poll_seconds,
        max_attempts=settings.scheduler_max_attempts,
        retry_after=timedelta(seconds=settings.scheduler_retry_seconds),
        paused=settings.sequences_paused,
    )


async def _scheduler(app: web.Application) -> AsyncIterator[None]:
    """The worker that runs due sequence steps, as a cancellable background task."""
    app[WORKER] = worker = scheduler_worker(app)
    if not app[SETTINGS].scheduler_enabled:
        yield
        return
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop), name="sequence-scheduler")
    log.info("scheduler.started", owner=worker.owner, sequences=len(worker.sequences))
    yield
    stop.set()
    try:
        await asyncio.wait_for(task, 10)
    except TimeoutError:
        task.cancel()
