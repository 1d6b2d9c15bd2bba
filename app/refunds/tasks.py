"""Refunds' background work.

- ``refunds.issue``: send one refund to Stripe, exactly once, the house way
  (``app/purchasing/tasks.py``): (1) a short transaction claims the ``requested`` refund for a
  lease and counts the attempt; (2) with no transaction open, ``POST /v1/refunds`` with
  ``Idempotency-Key: dropship-refund-<refund id>``; (3) a second transaction records Stripe's
  answer. A crash or a lost answer between (2) and (3) leaves it ``requested``: the retry (its
  backoff, or the sweeper for a lost job) sends the same key and Stripe answers with the refund
  it already made. Unreachable Stripe retries with backoff up to ``MAX_ATTEMPTS``, then a person
  is asked (exceptions queue) and the refund is not sent again by itself.
- ``refunds.refresh``: ask Stripe about a refund it is still working on (``pending``,
  ``requires_action``): on a ``charge.refunded`` that does not list its refunds, and from the
  sweeper when no webhook moved it for ``stale_after`` (a poll in case webhooks are lost).
- Policy refunds: on ``order.cancelled`` and ``return.received`` (not an exchange), when the
  merchant's ``refunds.on_cancel`` / ``on_return`` is ``auto``, one refund per cancellation or
  return (unique key), in the event's reaction; the job above sends it.
"""

from __future__ import annotations

import uuid
from typing import Any

import dramatiq
import structlog

from app.db import DbSession
from app.events.models import EventType, LifecycleEvent
from app.jobs.task import TaskContext, subscribe, task
from app.metrics import REFUNDS
from app.refunds import service
from app.refunds.models import RefundOrigin
from connectors.base import PermanentConnectorError, RetryableConnectorError
from connectors.stripe_payments import StripePayments

log = structlog.get_logger(__name__)


@task("refunds.issue", max_retries=service.MAX_ATTEMPTS * 4, stale=service.unsent)
async def issue(ctx: TaskContext, refund_id: str) -> None:
    rid = uuid.UUID(refund_id)
    async with ctx.db.transaction() as session:
        claim = await service.claim(session, ctx.settings, ctx.box, rid)
    if claim is None:
        return
    if claim.credentials is None:
        async with ctx.db.transaction() as session:
            failed = await service.refused(
                session, rid, claim.problem or "Stripe is not connected", claim.attempt
            )
        if failed:  # a refund given up is counted as such, once
            REFUNDS.labels("refused").inc()
        return
    try:
        async with StripePayments(claim.credentials, ctx.settings.stripe_api_base) as stripe:
            answer = await stripe.create_refund(
                refund_id=claim.refund_id,
                order_id=claim.order_id,
                reference=claim.reference,
                amount=claim.amount_minor,
                reason=claim.reason,
            )
    except RetryableConnectorError as exc:
        async with ctx.db.transaction() as session:
            delay = await service.retry_later(
                session, rid, claim.attempt, exc.message, exc.retry_after
            )
        log.warning("refund.retry", refund_id=refund_id, error=exc.message, delay_ms=delay)
        if delay is not None:
            REFUNDS.labels("retry").inc()
            raise dramatiq.Retry(exc.message, delay=delay) from None
        return
    except PermanentConnectorError as exc:
        async with ctx.db.transaction() as session:
            failed = await service.refused(session, rid, exc.message, claim.attempt)
        if failed:
            REFUNDS.labels("refused").inc()
        log.warning("refund.refused", refund_id=refund_id, error=exc.message)
        return
    async with ctx.db.transaction() as session:
        await service.answered(session, rid, answer)
    REFUNDS.labels("sent").inc()
    log.info(
        "refund.sent",
        refund_id=refund_id,
        stripe_refund_id=answer.id,
        status=answer.status,
        replayed=answer.replayed,
    )


@task("refunds.refresh", stale=service.unsettled)
async def refresh(ctx: TaskContext, refund_id: str) -> None:
    """Ask Stripe where a pending refund stands (``charge.refunded`` without its refunds, or no
    webhook for a while) and move it forward."""
    rid = uuid.UUID(refund_id)
    async with ctx.db.transaction() as session:
        target = await service.claim_refresh(session, ctx.settings, ctx.box, rid)
    if target is None:
        return
    try:
        async with StripePayments(target.credentials, ctx.settings.stripe_api_base) as stripe:
            answer = await stripe.retrieve_refund(target.stripe_refund_id)
    except (RetryableConnectorError, PermanentConnectorError) as exc:
        # Nothing is lost: the sweeper asks again after ``stale_after``.
        log.warning("refund.refresh_failed", refund_id=refund_id, error=exc.message)
        return
    async with ctx.db.transaction() as session:
        await service.refreshed(session, rid, answer)


def _lines(data: dict[str, Any], id_field: str) -> list[service.LineRequest]:
    out = []
    for item in data.get("lines") or []:
        if isinstance(item, dict) and item.get(id_field) and int(item.get("quantity") or 0) > 0:
            out.append(service.LineRequest(str(item[id_field]), int(item["quantity"])))
    return out


@subscribe(EventType.ORDER_CANCELLED)
async def refund_cancellation(ctx: TaskContext, session: DbSession, event: LifecycleEvent) -> None:
    """The cancelled lines (and shipping, when nothing shipped) go back, once per order."""
    if event.order_id is None:
        return
    data = event.data or {}
    await service.policy_refund(
        session,
        event.merchant_id,
        event.order_id,
        setting="on_cancel",
        key=f"cancel:{event.order_id}",
        origin=RefundOrigin.POLICY_CANCEL,
        lines=_lines(data, "line_id"),
        shipping=bool(data.get("shipping")),
        reason=str(data.get("reason") or "order cancelled")[:255],
        event_origin=str(data.get("origin") or "") or None,
    )


@subscribe(EventType.RETURN_RECEIVED)
async def refund_return(ctx: TaskContext, session: DbSession, event: LifecycleEvent) -> None:
    """A received return's lines go back (an exchange is a new order instead), once per
    return."""
    data = event.data or {}
    if event.order_id is None or data.get("exchange") or not data.get("return_id"):
        return
    await service.policy_refund(
        session,
        event.merchant_id,
        event.order_id,
        setting="on_return",
        key=f"return:{data['return_id']}",
        origin=RefundOrigin.POLICY_RETURN,
        lines=_lines(data, "order_line_id"),
        shipping=False,
        reason=str(data.get("reason") or f"return {data.get('number') or ''}".strip())[:255],
    )
