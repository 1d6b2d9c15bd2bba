"""``email.send``: deliver one stored email, once.

A short transaction claims the email (a lease, so two deliveries of the job never send it
twice at the same time), the message goes out with no transaction open, and a second
transaction marks it sent. A crash between sending and marking leaves it claimed; when the lease
runs out the sweeper sends it again with the same ``Message-ID``, so the repeat is recognisable
(and, without SMTP, replaces the same file). Temporary refusals retry with backoff; a permanent
refusal fails the email and says so on the order's timeline.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import timedelta

import dramatiq
import structlog

from app.db import DbSession, utcnow
from app.jobs.backoff import EARLY, backoff_ms
from app.jobs.errors import is_transient
from app.jobs.task import StaleWindow, TaskContext, task
from app.mail import service
from app.mail.models import EmailStatus, OutgoingEmail
from app.mail.sender import MailError, build_message
from app.mail.service import load_for_sending
from app.metrics import EMAILS
from app.orders.service import order_by_id
from app.timeline.service import record

log = structlog.get_logger(__name__)

MAX_ATTEMPTS = 10
MARK_TRIES = 5
#: A send (connect, TLS, the SMTP dialogue) is cut off after this long.
SEND_TIME_LIMIT_S = 120
#: How long a claimed email is left to its sender before the sweeper may send it again:
#: longer than a send may take, so a slow send is never doubled.
LEASE = timedelta(seconds=SEND_TIME_LIMIT_S * 2.5)
BASE_DELAY_MS = 5_000
MAX_DELAY_MS = 30 * 60_000


def retry_delay_ms(attempt: int) -> int:
    """The wait before the next send attempt (the one backoff, with this task's base and cap)."""
    return backoff_ms(attempt, base_ms=BASE_DELAY_MS, cap_ms=MAX_DELAY_MS)


async def _fail(session: DbSession, email: OutgoingEmail, reason: str) -> None:
    email.status = EmailStatus.FAILED
    email.last_error = reason
    email.claimed_at = None
    await _note(
        session, email, "email.failed", f"{email.kind} email to {email.to_address} failed: {reason}"
    )
    log.error("email.failed", email_id=str(email.id), error=reason)
    EMAILS.labels("failed").inc()


async def _note(session: DbSession, email: OutgoingEmail, type_: str, message: str) -> None:
    if email.order_id is None:
        return
    order = await order_by_id(session, email.order_id)
    if order is not None:
        record(session, order, type_, message, email_id=str(email.id), kind=email.kind)


async def _unsent(session: DbSession, window: StaleWindow) -> Sequence[uuid.UUID]:
    return await service.unsent(session, window, LEASE)


@task("email.send", max_retries=MAX_ATTEMPTS * 4, time_limit_s=SEND_TIME_LIMIT_S, stale=_unsent)
async def send_email(ctx: TaskContext, email_id: str) -> None:
    eid = uuid.UUID(email_id)
    now = utcnow()
    async with ctx.db.transaction() as session:
        email = await load_for_sending(session, eid)
        if email is None or email.status != EmailStatus.QUEUED:
            return
        if email.claimed_at is not None and email.claimed_at > now - LEASE:
            return  # another worker is sending it right now
        if email.next_attempt_at is not None and email.next_attempt_at > now + EARLY:
            return  # backing off: its own retry is scheduled
        if email.attempts >= MAX_ATTEMPTS:
            await _fail(session, email, f"gave up after {email.attempts} attempts")
            return
        try:
            msg = build_message(email)
        except ValueError as exc:  # an address or header no attempt can send
            await _fail(session, email, f"cannot build the message: {exc}")
            return
        email.claimed_at = now
        email.attempts += 1
        attempt = email.attempts

    try:
        await ctx.mail.send(msg)
    except MailError as exc:
        delay = retry_delay_ms(attempt)
        async with ctx.db.transaction() as session:
            email = await load_for_sending(session, eid)
            if email is None or email.status != EmailStatus.QUEUED:
                return
            email.last_error = exc.message
            email.claimed_at = None
            if not exc.retryable or attempt >= MAX_ATTEMPTS:
                await _fail(session, email, exc.message)
                return
            # The sweeper leaves it alone until then, so retries never pile up.
            email.next_attempt_at = utcnow() + timedelta(milliseconds=delay)
        EMAILS.labels("retry").inc()
        raise dramatiq.Retry(exc.message, delay=delay) from None

    # Sent: recording it must not fail into a second send. A transient database error is
    # retried here, in place; only a crash leaves the email to the sweeper (after the lease).
    for retry in range(MARK_TRIES):
        try:
            await _mark_sent(ctx, eid)
            break
        except Exception as exc:
            if retry == MARK_TRIES - 1 or not is_transient(exc):
                raise
            log.warning("email.mark_failed", email_id=email_id, error=repr(exc))
            await asyncio.sleep(0.2 * 2**retry)
    EMAILS.labels("sent").inc()
    log.info("email.sent", email_id=email_id, via=ctx.mail.describe)


async def _mark_sent(ctx: TaskContext, eid: uuid.UUID) -> None:
    async with ctx.db.transaction() as session:
        email = await load_for_sending(session, eid)
        if email is None or email.status != EmailStatus.QUEUED:
            return
        email.status = EmailStatus.SENT
        email.sent_at = utcnow()
        email.last_error = None
        await _note(session, email, "email.sent", f"{email.kind} email sent to {email.to_address}")
