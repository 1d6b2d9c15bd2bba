"""Carrier detection against every test number of the published courier data.

The numbers come from the shared fixture (jkeen/tracking_number_data), read here independently
of the app's vendored copy; a test checks that copy equals the fixture, so neither drifts.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec
import pytest

from app.carriers import (
    CarrierMatch,
    best_match,
    carrier_code,
    checksums,
    detect,
    formats,
    normalise,
    shopify_company,
    tracking_url_for,
)
from app.limits import MAX_TRACKING_NUMBER
from tests.support.shopify import FIXTURES

DATA = FIXTURES / "tracking_number_data"
VENDORED = Path(str(resources.files("app.carriers").joinpath("data")))


def _format_id(spec: dict[str, Any]) -> str:
    # Four formats have no id: the loader derives one from the name, the same way.
    return spec.get("id") or re.sub(r"[^0-9a-z]+", "_", spec["name"].lower()).strip("_")


def _cases(kind: str) -> list[Any]:
    cases = []
    for path in sorted((DATA / "couriers").glob("*.json")):
        courier = json.loads(path.read_text())
        for spec in courier["tracking_numbers"]:
            for i, number in enumerate(spec["test_numbers"][kind]):
                fid = _format_id(spec)
                cases.append(
                    pytest.param(
                        courier["courier_code"],
                        courier["name"],
                        fid,
                        number,
                        id=f"{fid}-{i}",
                    )
                )
    return cases


VALID = _cases("valid")
INVALID = _cases("invalid")

#: Valid numbers that are just as valid for another courier's format, which ranks first without
#: a stated carrier (data order among formats that both have a checksum, or both have none):
#: the expected courier is among the candidates, and first once the supplier names it.
AMBIGUOUS = {
    # 11 digits: DHL Express (mod 7) and Old Dominion (Luhn) both hold.
    "78045768393": "dhl",
    # 12 digits: FedEx Express (weighted mod 11) and Purolator (Luhn) both hold.
    "287809468872": "fedex",
    "320610804900": "fedex",
    # J + letters + 9 digits: the shape of DHL Express piece ids and of Purolator's; no checksum.
    "JFV247545960": "dhl",
    # 34 digits: FedEx Express (34) and USPS IMpb C both hold.
    "4201028200009261290113185417468510": "fedex",
}

#: Invalid numbers of one format that are valid numbers of another format of the same courier.
SAME_COURIER_OTHER_FORMAT = {
    # Purolator (alpha + 9) refuses 12 digits; they are a valid Purolator (12) number.
    "331426749957": "purolator_numeric",
}


def test_the_fixture_has_every_courier() -> None:
    codes = {json.loads(p.read_text())["courier_code"] for p in (DATA / "couriers").glob("*.json")}
    assert len(codes) == 18
    assert len(VALID) == 192
    assert len(INVALID) == 88
    assert len(formats.formats()) == 39


def test_the_vendored_data_equals_the_fixture() -> None:
    fixture = {p.name: p.read_bytes() for p in (DATA / "couriers").glob("*.json")}
    vendored = {p.name: p.read_bytes() for p in (VENDORED / "couriers").glob("*.json")}
    assert sorted(vendored) == sorted(fixture)
    for name, content in fixture.items():
        assert vendored[name] == content, name
    assert (VENDORED / "LICENSE").read_bytes() == (DATA / "LICENSE").read_bytes()
    assert "b79ce4bfc04519ef4bc85bf7c6f321795aadf3d3" in (VENDORED / "PROVENANCE.md").read_text()


@pytest.mark.parametrize(("code", "name", "format_id", "number"), VALID)
def test_every_valid_number_is_detected_as_its_format(
    code: str, name: str, format_id: str, number: str
) -> None:
    found = detect(number)
    assert (code, format_id) in [(m.courier_code, m.format_id) for m in found]
    expected_best = AMBIGUOUS.get(re.sub(r"\s", "", number), code)
    assert found[0].courier_code == expected_best
    # The supplier's carrier name settles every ambiguity.
    stated = detect(number, carrier=name)
    assert (stated[0].courier_code, stated[0].format_id) == (code, format_id)
    assert best_match(number, carrier=name) == stated[0]


@pytest.mark.parametrize(("code", "name", "format_id", "number"), INVALID)
def test_no_invalid_number_is_detected_as_its_courier(
    code: str, name: str, format_id: str, number: str
) -> None:
    found = [(m.courier_code, m.format_id) for m in detect(number)]
    assert (code, format_id) not in found
    other = SAME_COURIER_OTHER_FORMAT.get(number)
    assert [f for c, f in found if c == code] == ([other] if other else [])


def test_a_ups_number_in_full() -> None:
    assert detect(" 1 Z 8 V 9 2 A 7 0 3 6 7 2 0 3 0 2 4 ") == [
        CarrierMatch(
            courier_code="ups",
            courier_name="UPS",
            format_id="ups",
            format_name="UPS",
            number="1Z8V92A70367203024",
            tracking_url=(
                "https://wwwapps.ups.com/WebTracking/track?track=yes&trackNums=1Z8V92A70367203024"
            ),
            shopify_company="UPS",
            checksum="mod10",
            service_type="UPS United States Ground",
            country_code=None,
        )
    ]
    # Lower case and dashes as some suppliers write it.
    assert best_match("1z8v92a7-0367-2030-24") == detect("1Z8V92A70367203024")[0]


def test_s10_numbers_name_their_postal_service() -> None:
    gb = best_match("RB123456785GB")
    assert gb is not None
    assert (gb.courier_code, gb.courier_name, gb.country_code) == (
        "s10",
        "Royal Mail Group plc",
        "GB",
    )
    assert (gb.shopify_company, gb.service_type, gb.checksum) == (
        "Royal Mail",
        "Letter Post Registered",
        "s10",
    )
    assert (
        gb.tracking_url
        == "https://www.royalmail.com/track-your-item#/tracking-results/RB123456785GB"
    )
    us = best_match("RB123456785US")
    assert us is not None
    assert (us.shopify_company, us.courier_name) == ("USPS", "United States Postal Service")
    assert us.tracking_url == "https://tools.usps.com/go/TrackConfirmAction?tLabels=RB123456785US"
    # China Post is on Shopify's list (it builds the link); we know no page for it.
    cn = best_match("RB123456785CN")
    assert cn is not None
    assert (cn.shopify_company, cn.courier_name, cn.tracking_url) == (
        "China Post",
        "China Post",
        None,
    )
    # Cape Verde's post is in the data but not on Shopify's list.
    cv = best_match("RB123456785CV")
    assert cv is not None
    assert (cv.shopify_company, cv.courier_name) == (None, "Correios de Cabo Verde")
    # The check digit and the country must both hold.
    assert detect("RB123456786GB") == []
    assert detect("RB123456785XX") == []


def test_shopify_names_of_the_couriers() -> None:
    cases = {
        "1Z5R89390357567127": "UPS",
        "9400111206206406260787": "USPS",
        "986578788855": "FedEx",
        "3318810025": "DHL Express",
        "GM2951173225174494": "DHL eCommerce",
        "7316000100001234": None,  # not a number of any format
    }
    for number, company in cases.items():
        match = best_match(number)
        assert (shopify_company(match) if match else None) == company, number
    landmark = best_match("LTN74207623N1")
    assert landmark is not None
    assert (landmark.courier_code, landmark.shopify_company) == ("landmark", None)


def test_numbers_that_are_no_tracking_number() -> None:
    ups = "1Z8V92A70367203024"
    assert detect("") == []
    assert detect("   ") == []
    assert detect("---") == []
    assert detect(ups + "\x00") == []
    assert detect(ups[:-1] + "\uff14") == []  # a full-width digit
    assert detect("1Zé8V92A70367203024") == []
    assert detect(ups + "/") == []
    assert normalise(" " * (MAX_TRACKING_NUMBER - len(ups)) + ups) == ups
    assert detect(" " * (MAX_TRACKING_NUMBER - len(ups) + 1) + ups) == []
    assert detect("1" * 10_000) == []


def test_a_stated_carrier_ranks_first_only_when_the_number_fits_it() -> None:
    assert [m.courier_code for m in detect("78045768393")] == ["dhl", "old_dominion"]
    assert [m.courier_code for m in detect("78045768393", carrier="ODFL")] == [
        "old_dominion",
        "dhl",
    ]
    # A carrier the number cannot be changes nothing.
    assert [m.courier_code for m in detect("78045768393", carrier="UPS")] == [
        "dhl",
        "old_dominion",
    ]
    assert [m.courier_code for m in detect("78045768393", carrier="Hermes")] == [
        "dhl",
        "old_dominion",
    ]


def test_carrier_names_as_suppliers_spell_them() -> None:
    cases = {
        "UPS": "ups",
        "ups": "ups",
        "United Parcel Service": "ups",
        "FedEx": "fedex",
        "Fed-Ex": "fedex",
        "Federal Express": "fedex",
        "DHL": "dhl",
        "DHL eCommerce": "dhl",
        "USPS": "usps",
        "U.S.P.S.": "usps",
        "Royal Mail": "royal_mail",
        "Canada Post": "canada_post",
        "canada_post": "canada_post",
        "OnTrac": "ontrac",
        "YunExpress": "yunexpress",
        "Old Dominion": "old_dominion",
        "Hermes": None,
        "": None,
        None: None,
        "x" * 1000: None,
    }
    assert {name: carrier_code(name) for name in cases} == cases


def test_tracking_url_for_a_named_carrier() -> None:
    ups = "1Z5R89390357567127"
    ups_url = "https://wwwapps.ups.com/WebTracking/track?track=yes&trackNums=1Z5R89390357567127"
    assert tracking_url_for("UPS", ups) == ups_url
    assert tracking_url_for("ups", " 1z5r 8939 0357 5671 27 ") == ups_url
    assert tracking_url_for(None, ups) == ups_url
    # A UPS number the data knows no format of still gets UPS's page.
    assert (
        tracking_url_for("UPS", "K1234-5678")
        == "https://wwwapps.ups.com/WebTracking/track?track=yes&trackNums=K12345678"
    )
    assert (
        tracking_url_for("FedEx", "986578788855")
        == "https://www.fedex.com/apps/fedextrack/?tracknumbers=986578788855"
    )
    # Plain-HTTP templates of the data are served over HTTPS.
    assert (
        tracking_url_for("DHL", "3318810025")
        == "https://www.dhl.com/en/express/tracking.html?brand=DHL&AWB=3318810025"
    )
    assert (
        tracking_url_for("USPS", "RB123456785US")
        == "https://tools.usps.com/go/TrackConfirmAction?tLabels=RB123456785US"
    )
    assert (
        tracking_url_for("Royal Mail", "RB123456785GB")
        == "https://www.royalmail.com/track-your-item#/tracking-results/RB123456785GB"
    )
    # The 12 digits are FedEx's and Purolator's: the stated carrier's page wins.
    assert (
        tracking_url_for("Purolator", "287809468872")
        == "https://www.purolator.com/en/shipping/tracker?searchValue=287809468872"
    )
    # Carriers without a known page, unknown carriers and junk: no link, never another's.
    assert tracking_url_for("LaserShip", "1LS7119013618127-1") is None
    assert tracking_url_for("China Post", "RB123456785CN") is None
    assert tracking_url_for("Hermes", ups) is None
    assert tracking_url_for("UPS", "1Z\u00e9") is None
    assert tracking_url_for("UPS", "") is None
    assert tracking_url_for(None, "nothing") is None


def test_checksums_on_textbook_numbers() -> None:
    plain = checksums.Checksum(name="luhn")
    assert checksums.luhn("7992739871", "3", plain)
    assert not checksums.luhn("7992739871", "4", plain)
    assert not checksums.luhn("79927A9871", "3", plain)
    dpd = checksums.Checksum(name="mod_37_36", modulo=36)
    # ISO 7064's own example of MOD 37,36: "A12425GABC1234002M".
    assert checksums.mod_37_36("A12425GABC1234002", "M", dpd)
    assert not checksums.mod_37_36("A12425GABC1234002", "N", dpd)
    assert not checksums.mod_37_36("A12425gabc1234002", "M", dpd)
    s10 = checksums.Checksum(name="s10")
    assert checksums.s10("47312482", "9", s10)  # the UPU's example, EE473124829CH
    assert not checksums.mod10("123", "X", checksums.Checksum(name="mod10"))


def test_a_format_with_an_unknown_checksum_fails_the_load() -> None:
    courier = msgspec.json.decode(
        b'{"name": "X", "courier_code": "x", "tracking_numbers": [{"name": "X",'
        b' "regex": "(?<SerialNumber>[0-9]+)", "validation": {"checksum": {"name": "crc32"}}}]}',
        type=formats._Courier,
    )
    with pytest.raises(ValueError, match="unknown checksum 'crc32'"):
        formats.Format(courier, courier.tracking_numbers[0])
