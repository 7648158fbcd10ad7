"""Shared pytest setup. Fixtures for the real services live in `tests/support/` as plugins."""

pytest_plugins: list[str] = []
