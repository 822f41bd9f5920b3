"""Every setting Parley's backend runtime reads, from `PARLEY_*` variables and `.env`.

Read once, at start-up, into one typed object; nothing else reads the environment.
`.env.example` lists each setting with its default.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from yarl import URL

from message_rules.event_queue import DEFAULT_MAX_LENGTH, DEFAULT_TTL_HOURS, QUEUE

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PARLEY_",
        env_file=PROJECT_ROOT / ".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,  # `PARLEY_X=` in .env means "use the default"
        extra="ignore",
    )

    # Where the three processes listen. Loopback by default: none of them is
    # meant to face the internet without a proxy in front.
    host: str = "127.0.0.1"
    backend_port: int = Field(8000, ge=1, le=65535)
    rasa_port: int = Field(5005, ge=1, le=65535)
    action_server_port: int = Field(5055, ge=1, le=65535)
    # Where `parley backend` listens when that is not backend_port: a replica behind the
    # scale profile's entry point, which listens on backend_port (URLs stay the same).
    backend_listen_port: int | None = Field(None, ge=1, le=65535)
    # The Redis the scale profile's Rasa servers share (lock store, web chat sockets).
    redis_host: str = "127.0.0.1"
    # How many Rasa servers, action servers and backend API processes the scale profile
    # runs (docs/scaling.md: one per core is the measured sweet spot).
    scale_replicas: int = Field(2, ge=1, le=32)

    # Where state lives. Relative paths are taken from the project root.
    var_dir: Path = Path("var")
    models_dir: Path = Path("models")
    # Where the backend reads what marketers edit: scoring.yml and segments/.
    data_dir: Path = Path("data")
    database_url: str | None = Field(
        None, description="SQLAlchemy async URL; default: SQLite at <var_dir>/parley.db"
    )
    rasa_tracker_store_url: str | None = Field(
        None, description="SQLAlchemy URL for Rasa's tracker store; default: SQLite in var_dir"
    )
    rasa_endpoints: Path = Path("bot/endpoints.yml")
    rasa_credentials: Path = Path("bot/credentials.yml")
    # Where the backend reaches Rasa's HTTP API (hand-offs, web chat history), when not
    # on this host (e.g. http://rasa:5005 in docker-compose.yml).
    rasa_api_url: str | None = None

    # Secrets. Any left empty is generated afresh by `parley run` for that run only.
    rasa_token: SecretStr | None = None
    action_server_token: SecretStr | None = None
    backend_token: SecretStr | None = Field(
        None, description="the API token the action server presents (role service)"
    )
    # Keys the hashes of erased identities. Generated into var/ on SQLite if unset.
    secret_key: SecretStr | None = None

    # Twilio (SMS and calls). Unset, twilio_api_url means the local Twilio emulator,
    # which `parley run` starts on twilio_emulator_port; set it to
    # https://api.twilio.com (with a real account SID, auth token and number) to send.
    twilio_account_sid: str = "AC" + "0" * 32
    twilio_auth_token: SecretStr | None = None
    twilio_api_url: str | None = None
    twilio_emulator_port: int = Field(8010, ge=1, le=65535)
    # The number texts are sent from (E.164). The default is Twilio's test number.
    twilio_sms_number: str = "+15005550006"
    # The number follow-up calls come from (E.164, a Twilio number of the account);
    # unset: twilio_sms_number.
    twilio_voice_number: str | None = None
    # Where the emulator sends a person's texts ("A message comes in": this backend's
    # /twilio/sms, which `parley run` passes).
    twilio_sms_webhook_url: str | None = None
    # Where the emulator sends a person's calls (the voice channel's "A call comes in"
    # webhook, e.g. http://127.0.0.1:5005/webhooks/voice/call).
    twilio_voice_webhook_url: str | None = None
    # How many texts per second one sending number may send (long code 1, toll-free 3,
    # short code 100: ask Twilio), and how long a send may wait for its turn before
    # the API answers 429.
    sms_sends_per_second: float = Field(10.0, gt=0)
    sms_max_wait: float = Field(30.0, ge=0)
    # Every text a person sends is answered by the backend handing it to the bot (or,
    # for STOP, START and HELP, confirming it), one text at a time per sender and at most
    # sms_concurrent_turns at once (backend.messaging.text_turns). A turn not confirmed within
    # sms_turn_lease_seconds is tried again (the bot may have died); after
    # sms_turn_max_attempts failed attempts the text is given up and logged as an error.
    sms_concurrent_turns: int = Field(4, ge=1, le=256)
    sms_turn_lease_seconds: float = Field(120.0, gt=0)
    sms_turn_max_attempts: int = Field(30, ge=1, le=1000)
    # Where the emulator posts a text when that webhook fails (Twilio's "Primary handler
    # fails" URL): Rasa's SMS channel, /webhooks/sms/webhook, which `parley run` passes.
    twilio_sms_fallback_url: str | None = None
    # The base URL Twilio uses to reach this backend (delivery status callbacks), when
    # it differs from what the backend sees (behind a proxy); signatures cover it.
    public_url: str | None = None

    # E-mail (docs/email.md). Unset, smtp_host means the local mail sink, which `parley
    # run` starts: SMTP on mail_sink_smtp_port, its page and API on mail_sink_port. Set
    # it (with smtp_user and smtp_password) to send through a provider's SMTP endpoint:
    # smtp_security starttls (port 587 by default) or tls (465); none only on loopback.
    smtp_host: str | None = None
    smtp_port: int | None = Field(None, ge=1, le=65535)
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_seconds: float = Field(30.0, gt=0, le=300)
    # SMTP connections one process holds at once (providers cap them per sender).
    smtp_connections: int = Field(16, ge=1, le=200)
    mail_sink_smtp_port: int = Field(8025, ge=1, le=65535)
    mail_sink_port: int = Field(8026, ge=1, le=65535)
    # Who e-mails are from; unset: the business's contact address (data/business.yml).
    email_from: str | None = None
    # At most this many e-mails a second to one receiving domain (gmail.com, …), shared
    # by every backend replica: providers slow down or refuse a sender that floods them.
    email_domain_per_second: float = Field(10.0, gt=0, le=1000)
    # How long an e-mail may wait for its domain's turn before it is refused (and tried
    # again later by whoever sent it).
    email_max_wait: float = Field(30.0, ge=0, le=300)
    # Mailgun's HTTP webhook signing key: with it, POST /webhooks/mailgun takes Mailgun's
    # bounce and complaint events (checked against their signature). `parley run` makes
    # one for the local mail sink, which signs its simulated events with it.
    mailgun_webhook_signing_key: SecretStr | None = None
    # Where the local mail sink posts its simulated events (`parley run` sets it).
    mailgun_webhook_url: str | None = None
    # DKIM signing (dkimpy), when all three are set: the signing domain, the selector
    # whose public key is published at <selector>._domainkey.<domain>, and the PEM file
    # of the private key.
    dkim_domain: str | None = None
    dkim_selector: str | None = None
    dkim_private_key_file: Path | None = None

    # Web chat (docs/channels.md#web-chat). Session tokens are signed with
    # webchat_secret; unset, it is derived from secret_key, so a visitor's conversation
    # survives a restart. A token lives webchat_session_days; the widget renews it on
    # each visit. webchat_socket_url is where browsers reach Rasa's socket.io (default:
    # rasa_url). webchat_allowed_origins: comma-separated origins whose pages may start
    # chat sessions, or "*" for any page (tokens travel in bodies, never in cookies).
    webchat_secret: SecretStr | None = None
    webchat_session_days: float = Field(30.0, gt=0, le=366)
    webchat_socket_url: str | None = None
    webchat_allowed_origins: str = "*"

    # The console (/console): its session cookie is Secure, so browsers send it only over
    # HTTPS (and to http://127.0.0.1 and localhost, which they trust). Switch it off only
    # for plain HTTP on a private network you trust.
    console_secure_cookie: bool = True

    # Follow-up sequences: the scheduler inside the backend (backend.sequences.scheduler).
    # Paused: no step of any sequence runs until it is switched off again.
    scheduler_enabled: bool = True
    scheduler_poll_seconds: float = Field(1.0, gt=0)
    scheduler_batch: int = Field(100, ge=1, le=10000)
    # Batches one worker keeps in flight at once on PostgreSQL (SQLite: one). Keep it
    # under the database pool (15 connections per process).
    scheduler_concurrency: int = Field(8, ge=1, le=64)
    # Seconds between looks at who entered a segment that triggers a sequence.
    segment_sweep_seconds: float = Field(60.0, ge=1)
    scheduler_lease_seconds: float = Field(60.0, gt=0)
    scheduler_max_attempts: int = Field(5, ge=1, le=50)
    scheduler_retry_seconds: float = Field(60.0, gt=0)
    sequences_paused: bool = False

    # Rasa's conversation events in RabbitMQ (scale profile): `parley consume-events`
    # reads the queue bot/endpoints.scale.yml publishes to, with the same bounds (RabbitMQ
    # refuses a declaration with others). The same PARLEY_RABBITMQ_HOST, _USER and
    # _PASSWORD as the bot's; rabbitmq_url (amqp://user:password@host:port/vhost), when
    # set, is used instead of them. Neither password is ever logged.
    rabbitmq_url: SecretStr | None = None
    rabbitmq_host: str = "127.0.0.1"
    rabbitmq_port: int = Field(5672, ge=1, le=65535)
    rabbitmq_user: str = "guest"
    rabbitmq_password: SecretStr = SecretStr("guest")
    events_queue: str = Field(QUEUE, min_length=1, max_length=200)
    events_queue_max_length: int = Field(DEFAULT_MAX_LENGTH, ge=1)
    events_queue_ttl_hours: float = Field(DEFAULT_TTL_HOURS, gt=0)
    # Messages RabbitMQ hands the consumer before it acknowledges them, and how many
    # it stores in one transaction.
    events_prefetch: int = Field(200, ge=1, le=10000)
    events_batch: int = Field(100, ge=1, le=1000)

    # Phone numbers written without a country code are read as this region's.
    default_phone_region: str = "US"

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["logfmt", "json"] = "logfmt"
    # Seconds `parley run` waits for each process to report healthy.
    startup_timeout: float = Field(300.0, gt=0)

    @cached_property
    def root(self) -> Path:
        return PROJECT_ROOT

    def path(self, value: Path) -> Path:
        return value if value.is_absolute() else self.root / value

    @property
    def var_path(self) -> Path:
        return self.path(self.var_dir)

    @property
    def data_path(self) -> Path:
        return self.path(self.data_dir)

    @property
    def models_path(self) -> Path:
        return self.path(self.models_dir)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.var_path / 'parley.db'}"

    @property
    def resolved_tracker_store_url(self) -> str:
        return self.rasa_tracker_store_url or f"sqlite:///{self.var_path / 'rasa-tracker.db'}"

    def url(self, port: int) -> str:
        return f"http://{self.host}:{port}"

    @property
    def uses_mail_sink(self) -> bool:
        return self.smtp_host is None

    @property
    def resolved_smtp(self) -> tuple[str, int, str]:
        """Where e-mail goes: host, port and security (the local sink when unset)."""
        if self.smtp_host is None:
            return self.host, self.mail_sink_smtp_port, "none"
        default = {"starttls": 587, "tls": 465, "none": 25}[self.smtp_security]
        return self.smtp_host, self.smtp_port or default, self.smtp_security

    @property
    def uses_twilio_emulator(self) -> bool:
        return self.twilio_api_url is None

    @property
    def resolved_twilio_api_url(self) -> str:
        return self.twilio_api_url or self.url(self.twilio_emulator_port)

    @property
    def status_callback_url(self) -> str:
        """Where Twilio reports delivery: this backend's public URL."""
        return (self.public_url or self.backend_url).rstrip("/") + "/twilio/status"

    @property
    def sms_webhook_url(self) -> str:
        """Where Twilio posts the texts people send ("A message comes in"): this backend
        records each and answers Twilio; the bot answers the person after."""
        return (self.public_url or self.backend_url).rstrip("/") + "/twilio/sms"

    @property
    def call_status_callback_url(self) -> str:
        """Where Twilio reports the progress of a call Parley placed: this backend."""
        return (self.public_url or self.backend_url).rstrip("/") + "/twilio/call-status"

    @property
    def caller_id(self) -> str:
        """The number Parley's calls come from."""
        return self.twilio_voice_number or self.twilio_sms_number

    @property
    def voice_gather_url(self) -> str:
        """Where a person's answer to a call Parley placed goes: the voice channel's
        gather webhook, on Rasa's public URL (the proxy sends /webhooks/ to Rasa)."""
        return (self.public_url or self.rasa_url).rstrip("/") + "/webhooks/voice/gather"

    @property
    def resolved_webchat_socket_url(self) -> str:
        return (self.webchat_socket_url or self.rasa_url).rstrip("/")

    @property
    def webchat_origins(self) -> frozenset[str]:
        return frozenset(
            o.strip().rstrip("/") for o in self.webchat_allowed_origins.split(",") if o.strip()
        )

    @property
    def backend_url(self) -> str:
        return self.url(self.backend_port)

    @property
    def rasa_url(self) -> str:
        return self.url(self.rasa_port)

    @property
    def resolved_rasa_api_url(self) -> str:
        return (self.rasa_api_url or self.rasa_url).rstrip("/")

    @property
    def action_server_url(self) -> str:
        return self.url(self.action_server_port)

    @property
    def resolved_rabbitmq_url(self) -> str:
        """Where RabbitMQ is, with its password: for connecting, never for a log."""
        if self.rabbitmq_url is not None:
            return self.rabbitmq_url.get_secret_value()
        return str(
            URL.build(
                scheme="amqp", user=self.rabbitmq_user,
                password=self.rabbitmq_password.get_secret_value(), host=self.rabbitmq_host,
                port=self.rabbitmq_port, path="/",
            )
        )  # fmt: skip
