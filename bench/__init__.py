"""Benchmarks (``uv run python bench/ingest.py``); nothing here is imported by the service."""
