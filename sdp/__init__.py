"""Sikker Digital Post: sender library, CLI and local broker simulator."""

from __future__ import annotations

from sdp.schemas import ValidDocument, validate

__version__ = "0.1.0"

__all__ = ["ValidDocument", "__version__", "validate"]
