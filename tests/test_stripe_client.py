"""The Stripe client (``connectors/stripe_payments.py``: the real ``stripe`` library, async HTTPX)
against the simulator, behind respx and as a real server on loopback: what it sends, how
Stripe's errors become retryable or permanent, and that the simulator answers like Stripe
(its objects have the fields of Stripe's own examples, ``Idempotency-Key`` is enforced)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest
import respx

from connectors.base import PermanentConnectorError, RetryableConnectorError
from connectors.stripe_payments import (
    API_VERSION,
    Credentials,
    RefundDTO,
    StripeAuthError,
    StripePayments,
    from_stripe_amount,
    idempotency_key,
    refund_target,
    to_stripe_amount,
    verify_webhook,
)
from dropship.simulators import StripeSim, stripe_signature
from tests.support import stripe as st

KEY = "rk_test_51ClientTest0000000000wxyz"
PI = "pi_3ClientTestPayment0001"


@pytest.fixture
def sim() -> Iterator[StripeSim]:
    yield from st.serve()


def scope(sim: StripeSim) -> str:
    account = sim.add_key(KEY)
    sim.add_payment(PI, 5000, "eur", scope=account)
    return account


async def make(s: StripePayments, rid: str = "r-1", amount: int = 1000) -> RefundDTO:
    return await s.create_refund(refund_id=rid, order_id="o-1", reference=PI, amount=amount)


class TestRequests:
    async def test_a_refund_as_stripe_documents_it(self, sim: StripeSim) -> None:
        scope(sim)
        async with StripePayments(Credentials(KEY), sim.api_base) as s:
            refund = await s.create_refund(
                refund_id="r-1",
                order_id="o-1",
                reference=PI,
                amount=1234,
                reason="requested_by_customer",
            )
            again = await s.retrieve_refund(refund.id)
        [post, get] = sim.requests
        assert (post.method, post.path) == ("POST", "/v1/refunds")
        assert post.headers["authorization"] == f"Bearer {KEY}"
        assert post.headers["stripe-version"] == API_VERSION == "2026-10-28.endive"
        assert post.headers["idempotency-key"] == idempotency_key("r-1") == "dropship-refund-r-1"
        assert post.headers["content-type"] == "application/x-www-form-urlencoded"
        assert "stripe-account" not in post.headers
        assert dict(post.form) == {
            "payment_intent": PI,
            "amount": "1234",
            "reason": "requested_by_customer",
            "metadata[dropship_refund_id]": "r-1",
            "metadata[dropship_order_id]": "o-1",
        }
        assert (refund.status, refund.amount, refund.currency, refund.replayed) == (
            "succeeded",
            1234,
            "eur",
            False,
        )
        assert refund.metadata == {"dropship_refund_id": "r-1", "dropship_order_id": "o-1"}
        assert (get.method, get.path) == ("GET", f"/v1/refunds/{refund.id}")
        assert again.id == refund.id

    def test_charges_and_payment_intents_are_targeted_by_their_prefix(self) -> None:
        assert refund_target("pi_3MtwBwLkdIwHu7ix28a3tqPa") == {
            "payment_intent": "pi_3MtwBwLkdIwHu7ix28a3tqPa"
        }
        assert refund_target("ch_1N3zq2LkdIwHu7ixabcdEFGH") == {
            "charge": "ch_1N3zq2LkdIwHu7ixabcdEFGH"
        }
        assert refund_target("py_1N3zq2LkdIwHu7ixabcdEFGH") == {
            "charge": "py_1N3zq2LkdIwHu7ixabcdEFGH"
        }
        with pytest.raises(PermanentConnectorError):
            refund_target("shopify-checkout:abc")

    async def test_the_simulators_objects_have_stripes_fields(self, sim: StripeSim) -> None:
        scope(sim)
        async with StripePayments(Credentials(KEY), sim.api_base) as s:
            refund = await make(s)
        stored = sim.refunds[refund.id]
        expected = set(st.fixtures()["refund"])
        assert set(stored) - {"_scope"} == expected
        assert stored["object"] == "refund"
        assert stored["charge"].startswith("ch_")
        assert stored["payment_intent"] == PI


class TestIdempotency:
    async def test_same_key_same_body_is_the_same_refund_replayed(self, sim: StripeSim) -> None:
        scope(sim)
        async with StripePayments(Credentials(KEY), sim.api_base) as s:
            first = await make(s)
            second = await make(s)
        assert first.id == second.id
        assert second.replayed is True
        assert len(sim.refunds) == 1

    async def test_same_key_other_body_is_an_idempotency_error(self, sim: StripeSim) -> None:
        scope(sim)
        async with StripePayments(Credentials(KEY), sim.api_base) as s:
            await make(s, amount=1000)
            with pytest.raises(PermanentConnectorError) as caught:
                await make(s, amount=2000)
        assert "Keys for idempotent requests can only be used with the same parameters" in str(
            caught.value.message
        )
        assert [r.status for r in sim.refund_requests()] == [200, 400]

    async def test_never_more_than_the_payment(self, sim: StripeSim) -> None:
        scope(sim)
        async with StripePayments(Credentials(KEY), sim.api_base) as s:
            with pytest.raises(PermanentConnectorError, match="greater than unrefunded"):
                await make(s, "r-big", 5001)
            await make(s, "r-all", 5000)
            with pytest.raises(PermanentConnectorError, match="has already been refunded"):
                await make(s, "r-more", 1)


class TestErrors:
    @pytest.mark.parametrize(
        ("response", "kind", "retry_after"),
        [
            (
                httpx.Response(500, json={"error": {"type": "api_error", "message": "x"}}),
                RetryableConnectorError,
                None,
            ),
            (
                httpx.Response(
                    429,
                    json={
                        "error": {
                            "type": "invalid_request_error",
                            "code": "rate_limit",
                            "message": "slow",
                        }
                    },
                    headers={"Retry-After": "3"},
                ),
                RetryableConnectorError,
                3.0,
            ),
            (
                httpx.Response(
                    409,
                    json={
                        "error": {
                            "type": "idempotency_error",
                            "code": "idempotency_key_in_use",
                            "message": "in use",
                        }
                    },
                ),
                RetryableConnectorError,
                None,
            ),
            (
                httpx.Response(
                    401, json={"error": {"type": "invalid_request_error", "message": "bad key"}}
                ),
                StripeAuthError,
                None,
            ),
            (
                httpx.Response(
                    403, json={"error": {"type": "invalid_request_error", "message": "no"}}
                ),
                StripeAuthError,
                None,
            ),
            (
                httpx.Response(
                    402,
                    json={
                        "error": {
                            "type": "card_error",
                            "code": "card_declined",
                            "message": "declined",
                        }
                    },
                ),
                PermanentConnectorError,
                None,
            ),
        ],
    )
    async def test_stripes_errors_are_retryable_or_permanent(
        self, response: httpx.Response, kind: type[Exception], retry_after: float | None
    ) -> None:
        with respx.mock() as router:
            router.post("http://stripe.test/v1/refunds").mock(return_value=response)
            async with StripePayments(Credentials(KEY), "http://stripe.test") as s:
                with pytest.raises(kind) as caught:
                    await make(s)
        assert type(caught.value) is kind
        if isinstance(caught.value, RetryableConnectorError):
            assert caught.value.retry_after == retry_after

    async def test_a_timeout_is_retryable(self, sim: StripeSim) -> None:
        scope(sim)
        sim.fail_next("timeout")
        async with StripePayments(Credentials(KEY), sim.api_base) as s:
            with pytest.raises(RetryableConnectorError) as caught:
                await make(s)
        assert caught.value.message == "Stripe could not be reached (ReadTimeout)"
        assert len(sim.refunds) == 1  # Stripe made it: the retry must send the same key

    async def test_an_unknown_account_is_an_auth_error(self, sim: StripeSim) -> None:
        sim.add_connected("acct_1KnownAccount0000")
        creds = Credentials(st.PLATFORM_KEY, "acct_1UnknownAccount000")
        async with StripePayments(creds, sim.api_base) as s:
            with pytest.raises(StripeAuthError):
                await s.verify()
        async with StripePayments(
            Credentials(st.PLATFORM_KEY, "acct_1KnownAccount0000"), sim.api_base
        ) as s:
            assert await s.verify() == "acct_1KnownAccount0000"


class TestRealServer:
    async def test_the_simulator_served_on_loopback(self) -> None:
        with StripeSim().serving() as sim:
            scope(sim)
            assert sim.api_base.startswith("http://127.0.0.1:")
            async with StripePayments(Credentials(KEY), sim.api_base) as s:
                first = await make(s)
                sim.fail_next("timeout")  # the answer is lost: the connection just closes
                with pytest.raises(RetryableConnectorError):
                    await make(s, "r-2")
                replayed = await make(s, "r-2")
        assert first.replayed is False
        assert replayed.replayed is True
        assert len(sim.refunds) == 2


class TestWebhookSignature:
    def test_rotation_tolerance_and_forgery(self) -> None:
        body = b'{"id": "evt_1", "type": "refund.updated"}'
        now = stripe_signature(body, "whsec_new")
        old = stripe_signature(body, "whsec_old", int(time.time()) - 301)
        assert verify_webhook(body, now, ["whsec_old", "whsec_new"])
        assert not verify_webhook(body, now, ["whsec_other"])
        assert not verify_webhook(body, old, ["whsec_old"])
        two = now + "," + stripe_signature(body, "whsec_other").split(",")[1]
        assert verify_webhook(body, two, ["whsec_new"])
        assert not verify_webhook(body + b" ", now, ["whsec_new"])


class TestStripeAmounts:
    """Stripe's exponents, not CLDR's (which shows IDR and HUF without decimals)."""

    @pytest.mark.parametrize(
        ("amount", "currency", "minor", "back"),
        [
            ("2000", "JPY", 2000, "2000"),
            ("12.30", "USD", 1230, "12.30"),
            ("15000", "IDR", 1500000, "15000.00"),
            ("15000.50", "idr", 1500050, "15000.50"),
            ("3500", "HUF", 350000, "3500.00"),
            ("1.230", "KWD", 1230, "1.230"),
            ("1.235", "KWD", 1240, "1.240"),  # hundredths first: the last digit is 0
        ],
    )
    def test_to_and_from_stripes_integers(
        self, amount: str, currency: str, minor: int, back: str
    ) -> None:
        assert to_stripe_amount(Decimal(amount), currency) == minor
        assert str(from_stripe_amount(minor, currency)) == back

    @pytest.mark.parametrize(
        ("amount", "currency"), [("3500.50", "HUF"), ("12.5", "JPY"), ("1.5", "ISK")]
    )
    def test_what_stripe_cannot_take_is_refused(self, amount: str, currency: str) -> None:
        with pytest.raises(ValueError, match=f"Stripe takes {currency} amounts with 0 decimal"):
            to_stripe_amount(Decimal(amount), currency)
