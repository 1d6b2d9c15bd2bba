"""Carrier detection: which courier a tracking number belongs to, and its tracking link.

Built on the courier data of jkeen/tracking_number_data (MIT, vendored in ``data/``): formats,
checksums and URL templates of 18 couriers plus the UPU S10 postal format. A leaf: it imports
nothing of the other domains.

- :func:`detect` — every format a number is valid for, best first (:class:`CarrierMatch`).
- :func:`best_match` — the first of them, or None.
- :func:`shopify_company` — the ``trackingInfo.company`` name Shopify recognises, or None.
- :func:`tracking_url_for` — a link when a supplier names the carrier but sends no URL.
- :func:`carrier_code` — our code for a carrier name as suppliers spell it.
"""

from app.carriers.detect import (
    CarrierMatch,
    best_match,
    carrier_code,
    detect,
    normalise,
    shopify_company,
    tracking_url_for,
)

__all__ = [
    "CarrierMatch",
    "best_match",
    "carrier_code",
    "detect",
    "normalise",
    "shopify_company",
    "tracking_url_for",
]
