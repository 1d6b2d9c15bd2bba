"""Connector kinds, by name."""

from __future__ import annotations

from connectors.base import Connector
from connectors.portal import PortalConnector
from connectors.rest_json import RestJsonConnector

CONNECTORS: dict[str, type[Connector]] = {
    cls.kind: cls for cls in (PortalConnector, RestJsonConnector)
}


def connector_class(kind: str) -> type[Connector]:
    try:
        return CONNECTORS[kind]
    except KeyError:
        raise KeyError(
            f"unknown connector {kind!r}; one of {', '.join(sorted(CONNECTORS))}"
        ) from None
