"""Carrier names: the ones Shopify recognises, and the spellings suppliers use.

Shopify builds the tracking link itself (and follows the parcel) when
``FulfillmentTrackingInfo.company`` is one of the names its schema lists, spelled exactly; the
names below are copied from that list (Admin API 2025-01). A carrier it does not list is still
sent by name, with our URL.
"""

from __future__ import annotations

import re

#: Our courier code (the data's ``courier_code``) → Shopify's name. gofo, landmark and speedee
#: are not on Shopify's list.
SHOPIFY_COMPANY: dict[str, str] = {
    "amazon": "Amazon",
    "canada_post": "Canada Post",
    "canpar": "Canpar",
    "dhl": "DHL Express",
    "dpd": "DPD",
    "fedex": "FedEx",
    "lasership": "Lasership",
    "old_dominion": "Old Dominion",
    "ontrac": "OnTrac",
    "purolator": "Purolator",
    "ups": "UPS",
    "usps": "USPS",
    "yodel": "Yodel",
    "yunexpress": "YunExpress",
}
#: DHL's e-commerce numbers are a separate carrier at Shopify.
SHOPIFY_DHL_ECOMMERCE = "DHL eCommerce"

#: An S10 (UPU) number ends with its postal service's country: country → Shopify's name of it.
SHOPIFY_POSTAL: dict[str, str] = {
    "AT": "Österreichische Post",
    "AU": "Australia Post",
    "BE": "BPost",
    "BR": "Correios",
    "CA": "Canada Post",
    "CH": "Swiss Post",
    "CN": "China Post",
    "CY": "Cyprus Post",
    "DE": "Deutsche Post",
    "DK": "PostNord DK",
    "ES": "Correos",
    "FR": "La Poste",
    "GB": "Royal Mail",
    "IE": "An Post",
    "IL": "Israel Post",
    "IN": "India Post",
    "IS": "Iceland Post",
    "IT": "Poste Italiane",
    "JP": "Japan Post (EN)",
    "LT": "Lietuvos Paštas",
    "LV": "Latvia Post",
    "NL": "PostNL",
    "NZ": "New Zealand Post",
    "PT": "CTT",
    "SE": "PostNord SE",
    "SG": "Singapore Post",
    "US": "USPS",
}

#: Carriers we link to that the data has no format of (their numbers are S10 ones).
ROYAL_MAIL = "royal_mail"
EXTRA_TRACKING_URLS: dict[str, str] = {
    ROYAL_MAIL: "https://www.royalmail.com/track-your-item#/tracking-results/%s",
}

#: An S10 number's country → the carrier code whose tracking page follows it.
POSTAL_CARRIER: dict[str, str] = {"US": "usps", "CA": "canada_post", "GB": ROYAL_MAIL}

# Spellings → carrier code, keyed by :func:`name_key` (lower case, letters and digits only), so
# "FedEx", "Fed-Ex" and "fedex" are one. The codes themselves and the Shopify names are added
# below.
_ALIASES: dict[str, str] = {
    "unitedparcelservice": "ups",
    "upsground": "ups",
    "unitedstatespostalservice": "usps",
    "uspostalservice": "usps",
    "uspostoffice": "usps",
    "federalexpress": "fedex",
    "fedexground": "fedex",
    "fedexexpress": "fedex",
    "fedexhomedelivery": "fedex",
    "dhlecommerce": "dhl",
    "dhlecommerceasia": "dhl",
    "dhlglobalmail": "dhl",
    "dhlexpress": "dhl",
    "dpduk": "dpd",
    "dpdlocal": "dpd",
    "dpdgroup": "dpd",
    "postescanada": "canada_post",
    "amazonlogistics": "amazon",
    "amazonshipping": "amazon",
    "amzl": "amazon",
    "odfl": "old_dominion",
    "olddominionfreightline": "old_dominion",
    "landmarkglobal": "landmark",
    "gofoexpress": "gofo",
    "speedeedelivery": "speedee",
    "royalmail": ROYAL_MAIL,
    "royalmailgroup": ROYAL_MAIL,
    "royalmailgroupplc": ROYAL_MAIL,
}

_NOT_ALNUM = re.compile(r"[^0-9a-z]+")


def name_key(name: str) -> str:
    """A carrier name as compared: lower case, letters and digits only ("Fed-Ex" → "fedex")."""
    return _NOT_ALNUM.sub("", name.casefold())


def alias_table(codes: set[str]) -> dict[str, str]:
    """Every spelling we know → its carrier code, for the data's ``codes`` and ours."""
    table = {name_key(code): code for code in codes | set(EXTRA_TRACKING_URLS)}
    table.update((name_key(name), code) for code, name in SHOPIFY_COMPANY.items())
    table.update(_ALIASES)
    return table
