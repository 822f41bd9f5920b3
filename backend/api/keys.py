"""Typed keys for what the aiohttp application and its requests share."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.conversations.rasa_client import RasaClient
from backend.core.clock import Clock
from backend.core.models import ApiToken
from backend.core.settings import Settings
from backend.data_files import BusinessTexts
from backend.handoffs.desk import Desk
from backend.handoffs.email_replies import EmailReplies
from backend.messaging.call_door import CallDoor
from backend.messaging.email_door import EmailDoor
from backend.messaging.held import HeldMessages
from backend.messaging.inbound import KeywordReplies, SmsInbox
from backend.messaging.mailgun import MailgunWebhook
from backend.messaging.sms_door import SmsDoor
from backend.messaging.text_turns import TextTurns
from backend.messaging.web_door import WebDoor
from backend.people.privacy import Privacy
from backend.people.profiles import ProfileDirectory
from backend.people.retention import Retention
from backend.scoring.rules import ScoringRules
from backend.segments.rules import SegmentDefinition
from backend.sequences.definition import SequenceDefinition
from backend.sequences.scheduler.worker import Worker
from backend.webchat.sessions import ChatSessions

SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
ENGINE = web.AppKey("engine", AsyncEngine)
SESSIONS = web.AppKey("sessions", async_sessionmaker[AsyncSession])
# The rules of data/scoring.yml and the segments of data/segments/, read at start-up.
SCORING = web.AppKey("scoring", ScoringRules)
FILE_SEGMENTS = web.AppKey("file_segments", list[SegmentDefinition])
# The follow-up sequences of data/sequences/, read at start-up, by name.
SEQUENCES = web.AppKey("sequences", list[SequenceDefinition])
DIRECTORY = web.AppKey("directory", ProfileDirectory)
RASA = web.AppKey("rasa", RasaClient)
# The one door for outbound texts (absent when no Twilio auth token is set), and the
# inbox that records texts people send and answers their STOP, START and HELP.
SMS_DOOR = web.AppKey("sms_door", SmsDoor)
INBOX = web.AppKey("inbox", SmsInbox)
# Answers every recorded text once: the bot's turn, or a keyword's confirmation.
TEXT_TURNS = web.AppKey("text_turns", TextTurns)
# The one door for outbound calls (follow-ups by voice), beside the SMS door and
# likewise absent when no Twilio auth token is set.
CALL_DOOR = web.AppKey("call_door", CallDoor)
# The web door (absent when Rasa's token is not set), and the marketing messages the
# doors held until they may go.
WEB_DOOR = web.AppKey("web_door", WebDoor)
HELD = web.AppKey("held", HeldMessages)
# The one door for outbound e-mail (to the configured SMTP server, or the local sink).
EMAIL_DOOR = web.AppKey("email_door", EmailDoor)
# E-mails people send: recorded, and handed to a person to answer by e-mail.
EMAIL_REPLIES = web.AppKey("email_replies", EmailReplies)
# Mailgun's webhook, when its signing key is set.
MAILGUN = web.AppKey("mailgun", MailgunWebhook)
# What agents do with hand-offs: claim, reply (through the web, SMS and e-mail doors),
# close.
DESK = web.AppKey("desk", Desk)
# GDPR export and erasure (for the API and the console).
PRIVACY = web.AppKey("privacy", Privacy)
# The retention job (data/business.yml `retention:`).
RETENTION = web.AppKey("retention", Retention)
# Runs due steps of follow-up sequences (started only when scheduler_enabled).
WORKER = web.AppKey("worker", Worker)
KEYWORD_REPLIES = web.AppKey("keyword_replies", KeywordReplies)
# What the backend reads of data/business.yml, once at start-up.
BUSINESS_TEXTS = web.AppKey("business_texts", BusinessTexts)
# Issues and checks web chat session tokens.
CHAT_SESSIONS = web.AppKey("chat_sessions", ChatSessions)
# The OpenAPI document and its HTML rendering, made once at start-up.
OPENAPI = web.AppKey("openapi", str)
DOCS_PAGE = web.AppKey("docs_page", str)

# The token that authenticated the current request.
CALLER = web.RequestKey("caller", ApiToken)
