"""Request and answer shapes of the customer email templates API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from msgspec import Meta

from app import limits
from app.notifications.render import Rendered, Source

Subject = Annotated[str, Meta(min_length=1, max_length=limits.MAX_TEMPLATE_SUBJECT)]
Body = Annotated[str, Meta(min_length=1, max_length=limits.MAX_TEMPLATE_BODY)]


def _no_nul(struct: msgspec.Struct) -> None:
    # Not ``app.inputs.Input``: its bound on any string (10,000 characters) is too small for an
    # HTML email; these strings have their own bounds above.
    for name in struct.__struct_fields__:
        value = getattr(struct, name)
        if isinstance(value, str) and "\x00" in value:
            raise ValueError(f"{name}: must not contain NUL characters")


class TemplateIn(msgspec.Struct, forbid_unknown_fields=True):
    """A customer email as Jinja2 source: the subject, the plain text and the HTML."""

    subject: Subject
    text: Body
    html: Body

    def __post_init__(self) -> None:
        _no_nul(self)

    def source(self) -> Source:
        return Source(self.subject, self.text, self.html)


class PreviewIn(msgspec.Struct, forbid_unknown_fields=True):
    """Parts to preview instead of the stored ones (each optional)."""

    subject: Subject | None = None
    text: Body | None = None
    html: Body | None = None

    def __post_init__(self) -> None:
        _no_nul(self)


class TemplateOut(msgspec.Struct):
    """The template in use: the merchant's own (``customized``) or the one shipped."""

    event: str
    locale: str
    subject: str
    text: str
    html: str
    customized: bool
    updated_at: datetime | None

    @classmethod
    def of(
        cls, event: str, locale: str, source: Source, updated_at: datetime | None
    ) -> TemplateOut:
        return cls(
            event=event,
            locale=locale,
            subject=source.subject,
            text=source.text,
            html=source.html,
            customized=updated_at is not None,
            updated_at=updated_at,
        )


class PreviewOut(msgspec.Struct):
    """The template rendered with a sample order and the store's branding."""

    event: str
    locale: str
    subject: str
    text: str
    html: str

    @classmethod
    def of(cls, event: str, locale: str, rendered: Rendered) -> PreviewOut:
        return cls(event, locale, rendered.subject, rendered.text, rendered.html)
