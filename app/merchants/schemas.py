from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from app.inputs import Input


class ShopifyTokenIn(Input):
    """The store's Admin API access token (a custom app's), stored encrypted, never shown
    again."""

    access_token: Annotated[str, Meta(min_length=1, max_length=255)]


class ShopifyConnectionOut(msgspec.Struct):
    """Whether the service holds an Admin API token for the store (the token is never shown)."""

    shop: str
    access_token_set: bool
