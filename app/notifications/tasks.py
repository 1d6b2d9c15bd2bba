"""The customer emails' subscriber: one email per lifecycle event that calls for one.

It runs in the event's ``events.handle`` job and transaction, at least once; the email's unique
key makes a second run queue nothing (see ``app.notifications.service``). Sending is the email
outbox's own task (``email.send``), so no network I/O happens here.
"""

from __future__ import annotations

from app.db import DbSession
from app.events.models import LifecycleEvent
from app.jobs.task import TaskContext, subscribe
from app.notifications import service


@subscribe(*service.EVENT_KINDS, when=service.may_notify)
async def email_customer(ctx: TaskContext, session: DbSession, event: LifecycleEvent) -> None:
    await service.notify(session, ctx.settings, event)
