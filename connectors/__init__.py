"""Supplier connectors: one module per channel or platform behind one small interface.

The interface and the first connectors (portal, rest_json) arrive with routing.
"""
