"""Fixtures of the integration tests alone."""

from ..browser import browsers

# Registered here for the page's browser tests, which take it as a parameter.
__all__ = ["browsers"]
