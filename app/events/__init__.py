"""Lifecycle events: what happened to an order, published once for everyone who reacts to it."""
