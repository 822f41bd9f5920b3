"""What an e-mail Parley sends is made of (Python's `email` package builds it):

- multipart/alternative, a text part and an HTML part (made from the text when only
  text is given; a follow-up's text part is read out of its HTML, `text_of_html`), UTF-8;
- `From` with the business's name, `To`, `Subject`, `Date`, and a `Message-ID` of our
  own, which the person's reply quotes (`In-Reply-To`) and bounces name;
- on every marketing e-mail, what CAN-SPAM and the mailbox providers ask: the
  business's postal address (data/business.yml `address`), who it is from and why the
  person gets it, a visible unsubscribe link, and `List-Unsubscribe` with an HTTPS URL
  and a mailto, with `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058);
- optionally a DKIM signature (dkimpy) over the headers that matter.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import datetime
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import format_datetime, formataddr
from pathlib import Path
from typing import Any, cast

import dkim
from inscriptis import get_text
from inscriptis.css_profiles import CSS_PROFILES
from inscriptis.model.config import ParserConfig

SIGNED_HEADERS = [
    b"from", b"to", b"subject", b"date", b"message-id", b"mime-version", b"content-type",
    b"list-unsubscribe", b"list-unsubscribe-post",
]  # fmt: skip


# Where a marketing e-mail's own unsubscribe link goes before the door knows the message
# (follow-up templates write `{{ unsubscribe_url }}`): replaced by the message's link.
# A URL, so that escaping and CSS inlining leave it as it is.
UNSUBSCRIBE_URL = "https://unsubscribe.parley.invalid/"

# A Message-ID as it may go into a header again: one <local@domain>, nothing that could
# break the header (a person's mail app chose it).
_MESSAGE_ID = re.compile(r"<[^<>\s\x00-\x1f]{1,900}>")

# Parts in UTF-8, quoted-printable (readable in the source; base64 looks like spam).
_UTF8 = Charset("utf-8")
_UTF8.body_encoding = QP
# On the wire: CRLF line ends; a header that would break a line is refused.
_WIRE = compat32.clone(linesep="\r\n")

_TEXT_OF_HTML = ParserConfig(css=CSS_PROFILES["relaxed"], display_links=True)


def text_of_html(body: str) -> str:
    """The text part of an HTML e-mail: its words as a reader sees them, lists and
    tables laid out, each link's address after its words."""
    return str(get_text(body, _TEXT_OF_HTML)).strip()


@dataclass(frozen=True)
class Sender:
    """Who e-mails are from: the business, as data/business.yml names it."""

    name: str
    address: str  # the From address
    postal_address: str  # where the business is: shown in every marketing e-mail


@dataclass(frozen=True)
class Dkim:
    domain: str
    selector: str
    private_key: bytes  # PEM

    @classmethod
    def from_file(cls, domain: str, selector: str, path: Path) -> Dkim:
        return cls(domain, selector, path.read_bytes())

    def sign(self, raw: bytes) -> bytes:
        signature = dkim.sign(
            raw, self.selector.encode(), self.domain.encode(), self.private_key,
            include_headers=SIGNED_HEADERS,
        )  # fmt: skip
        return bytes(signature) + raw


@dataclass(frozen=True)
class Unsubscribe:
    """Where the person unsubscribes: the page (and one-click POST) and a mailbox."""

    url: str
    mailto: str


def message_id(message: int, domain: str) -> str:
    return f"<parley.{message}@{domain}>"


def domain_of(address: str) -> str:
    return address.rsplit("@", 1)[-1]


def compose(
    sender: Sender,
    to: str,
    subject: str,
    text: str,
    body_html: str | None,
    marketing: bool,
    unsubscribe: Unsubscribe | None,
    message: int,
    at: datetime,
    in_reply_to: str | None = None,
) -> Message:
    """The e-mail, with its footer, before signing; `in_reply_to`: the Message-ID of
    the e-mail it answers (In-Reply-To and References thread it).

    Built with the `email` package's classic MIME classes: the modern API parses every
    header it is given again, which cost four times as much per e-mail; the headers
    here are made from checked values, and the generator still refuses one that would
    break a line (`verify_generated_headers`)."""
    if any(c in value for value in (to, subject, sender.name) for c in "\r\n"):
        raise ValueError("a header value cannot hold a line break")
    text_footer, html_footer = _footer(sender, marketing, unsubscribe)
    link = unsubscribe.url if marketing and unsubscribe is not None else ""
    text = text.replace(UNSUBSCRIBE_URL, link)
    shown = body_html.replace(UNSUBSCRIBE_URL, html.escape(link)) if body_html else None
    mail = MIMEMultipart("alternative")
    mail["From"] = formataddr((sender.name, sender.address), charset="utf-8")
    mail["To"] = to
    mail["Subject"] = subject if subject.isascii() else Header(subject, "utf-8").encode()
    mail["Date"] = format_datetime(at)
    mail["Message-ID"] = message_id(message, domain_of(sender.address))
    if in_reply_to and _MESSAGE_ID.fullmatch(in_reply_to):
        mail["In-Reply-To"] = mail["References"] = in_reply_to
    if marketing and unsubscribe is not None:
        mail["List-Unsubscribe"] = f"<{unsubscribe.url}>, <{unsubscribe.mailto}>"
        mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    mail.attach(_part(text.rstrip() + "\n\n-- \n" + text_footer + "\n", "plain"))
    mail.attach(_part(_html_document(subject, shown or _paragraphs(text), html_footer), "html"))
    return mail


def _part(body: str, subtype: str) -> MIMEText:
    # MIMEText takes a Charset as its charset (typeshed says only a name).
    return MIMEText(body, subtype, cast(Any, _UTF8))


def _footer(sender: Sender, marketing: bool, unsubscribe: Unsubscribe | None) -> tuple[str, str]:
    who = f"{sender.name}, {sender.postal_address}"
    if not marketing or unsubscribe is None:
        return who, f'<p style="color:#666;font-size:12px">{html.escape(who)}</p>'
    why = f"You get this e-mail because you agreed to hear from {sender.name} by e-mail."
    text = f"{who}\n{why}\nUnsubscribe: {unsubscribe.url}"
    shown = (
        f'<hr style="border:none;border-top:1px solid #ddd">'
        f'<p style="color:#666;font-size:12px">{html.escape(who)}<br>{html.escape(why)}<br>'
        f'<a href="{html.escape(unsubscribe.url)}">Unsubscribe</a></p>'
    )
    return text, shown


def _paragraphs(text: str) -> str:
    return "".join(
        "<p>" + html.escape(block).replace("\n", "<br>") + "</p>"
        for block in text.strip().split("\n\n")
        if block.strip()
    )


def _html_document(title: str, body: str, footer: str) -> str:
    """The HTML part: a whole document given (a follow-up's, CSS inlined) keeps its own
    head and body, the footer put at its end; else the body in a plain document."""
    end = body.lower().rfind("</body>")
    if end >= 0:
        return body[:end] + footer + body[end:]
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head>"
        f'<body style="font-family:sans-serif;line-height:1.5">{body}{footer}</body></html>'
    )


def as_bytes(mail: Message, dkim_key: Dkim | None) -> bytes:
    """The e-mail as it goes over SMTP (CRLF line ends), signed when DKIM is set."""
    raw = mail.as_bytes(policy=_WIRE)
    return dkim_key.sign(raw) if dkim_key else raw
