"""Cancelling orders: before routing at once, after routing at each supplier."""
