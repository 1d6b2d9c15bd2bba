"""Refunds through Stripe: the merchant's Stripe connection, refunds (by the merchant or by
policy), the refund job, and Stripe's webhooks."""
