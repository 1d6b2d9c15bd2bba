"""Queueing an email: render it, store it once per event, and enqueue its sending.

Call :func:`queue_email` inside the transaction of the event. The email row and its outbox job
commit (or vanish) with the event; the unique ``(merchant, key)`` makes a repeated event a no-op.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from email.utils import formataddr, parseaddr
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, TemplateNotFound, select_autoescape
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import insert_for, utcnow, uuid7
from app.jobs.outbox import enqueue
from app.jobs.task import StaleWindow
from app.mail.models import EmailStatus, OutgoingEmail

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
    reply_to: str | None = None,
    order_id: uuid.UUID | None = None,
    purchase_order_id: uuid.UUID | None = None,
) -> uuid.UUID | None:
    """Store the email for this event and enqueue its sending; None if the event already has it."""
    return await store_email(
        session,
        merchant_id=merchant_id,
        key=key,
        kind=kind,
        to=to,
        sender=sender,
        content=render(template, context),
        sender_name=sender_name,
        reply_to=reply_to,
        order_id=order_id,
        purchase_order_id=purchase_order_id,
    )


async def store_email(
    session: AsyncSession,
    *,
    merchant_id: uuid.UUID,
    key: str,
    kind: str,
    to: str,
    sender: str,
    content: tuple[str, str, str | None],
    sender_name: str | None = None,
    reply_to: str | None = None,
    order_id: uuid.UUID | None = None,
    purchase_order_id: uuid.UUID | None = None,
) -> uuid.UUID | None:
    """:func:`queue_email` for an email rendered elsewhere (``content``: subject, text, html);
    None if the event already has its email."""
    subject, text, html = content
    subject = " ".join(subject.split())
    if len(subject) > SUBJECT_MAX:
        subject = subject[: SUBJECT_MAX - 1] + "…"
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
        "reply_to": reply_to,
        "subject": subject,
        "text_body": text,
        "html_body": html,
        "message_id": message_id(email_id, sender),
        "status": EmailStatus.QUEUED,
        "attempts": 0,
        "created_at": utcnow(),
    }
    insert = insert_for(session)
    result = await session.execute(
        insert(OutgoingEmail)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["merchant_id", "key"])
        .returning(OutgoingEmail.id)
    )
    if result.scalar_one_or_none() is None:
        return None
    # Imported here: app.mail.tasks reads emails through this module (a cycle).
    from app.mail.tasks import send_email

    await enqueue(session, send_email, email_id)
    return email_id


async def email_exists(session: AsyncSession, merchant_id: uuid.UUID, key: str) -> bool:
    """The event already has its email (spares rendering it again on a repeated event)."""
    found = await session.scalar(
        select(OutgoingEmail.id).where(
            OutgoingEmail.merchant_id == merchant_id, OutgoingEmail.key == key
        )
    )
    return found is not None


async def load_for_sending(session: AsyncSession, email_id: uuid.UUID) -> OutgoingEmail | None:
    """The email, row-locked so that its claim and its marking take turns."""
    query = select(OutgoingEmail).where(OutgoingEmail.id == email_id).with_for_update()
    email: OutgoingEmail | None = await session.scalar(query)
    return email


async def unsent(
    session: AsyncSession, window: StaleWindow, lease: timedelta
) -> Sequence[uuid.UUID]:
    """An email whose job was lost, or whose sender died after claiming it (``lease`` over),
    unless it is backing off after a temporary failure."""
    return await window.ids(
        session,
        select(OutgoingEmail.id).where(
            OutgoingEmail.status == EmailStatus.QUEUED,
            OutgoingEmail.created_at < window.cutoff,
            or_(
                OutgoingEmail.claimed_at.is_(None),
                OutgoingEmail.claimed_at < window.now - lease,
            ),
            window.due(OutgoingEmail.next_attempt_at),
        ),
    )
