"""Adapters to third-party optimiser implementations, imported lazily.

Each adapter module exposes ``available()``, ``MISSING_MESSAGE`` and a factory that raises
``ImportError(MISSING_MESSAGE)`` when its package is not installed, so the suite imports and
runs without them.
"""
