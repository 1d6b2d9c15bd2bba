"""Queueing an email: render it, store it once per event, and enqueue its sending.

Call :func:`queue_email` inside the transaction of the event. The email row and its outbox job
commit (or vanish) with the event; the unique ``(merchant, key)`` makes a repeated event a no-op.
"""

from __future__ import annotations

import uuid
from email.utils import formataddr, parseaddr
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, TemplateNotFound, select_autoescape
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow, uuid7
from app.jobs.outbox import enqueue
from app.mail.models import EmailStatus, OutgoingEmail
from app.mail.tasks import send_email

SUBJECT_MAX = 300  # the column's size


@cache
def _templates() -> Environment:
    return Environment(
        loader=PackageLoader("app.mail", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html",), default=False),
        undefined=StrictUndefined,
        trim_blocks=False,
        keep_trailing_newline=True,
    )


def render(template: str, context: dict[str, Any]) -> tuple[str, str, str | None]:
    """(subject, text, html or None) from ``<template>.subject``, ``.txt`` and ``.html``."""
    env = _templates()
    subject = " ".join(env.get_template(f"{template}.subject").render(context).split())
    if len(subject) > SUBJECT_MAX:
        subject = subject[: SUBJECT_MAX - 1] + "…"
    text = env.get_template(f"{template}.txt").render(context)
    try:
        html: str | None = env.get_template(f"{template}.html").render(context)
    except TemplateNotFound:
        html = None
    return subject, text, html


def message_id(email_id: uuid.UUID, sender: str) -> str:
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    return f"<{email_id}@{domain}>"


async def queue_email(
    session: AsyncSession,
    *,
    merchant_id: uuid.UUID,
    key: str,
    kind: str,
    to: str,
    sender: str,
    template: str,
    context: dict[str, Any],
    sender_name: str | None = None,
    order_id: uuid.UUID | None = None,
    purchase_order_id: uuid.UUID | None = None,
) -> uuid.UUID | None:
    """Store the email for this event and enqueue its sending; None if the event already has it."""
    subject, text, html = render(template, context)
    email_id = uuid7()
    values = {
        "id": email_id,
        "merchant_id": merchant_id,
        "key": key,
        "kind": kind,
        "order_id": order_id,
        "purchase_order_id": purchase_order_id,
        "to_address": to,
        "from_address": formataddr((sender_name, sender)) if sender_name else sender,
        "subject": subject,
        "text_body": text,
        "html_body": html,
        "message_id": message_id(email_id, sender),
        "status": EmailStatus.QUEUED,
        "attempts": 0,
        "created_at": utcnow(),
    }
    bind = session.get_bind()
    insert = postgresql_insert if bind.dialect.name == "postgresql" else sqlite_insert
    result = await session.execute(
        insert(OutgoingEmail)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["merchant_id", "key"])
        .returning(OutgoingEmail.id)
    )
    if result.scalar_one_or_none() is None:
        return None
    await enqueue(session, send_email, email_id)
    return email_id
