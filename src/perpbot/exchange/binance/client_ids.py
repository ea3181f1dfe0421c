"""Deterministic client order ids for the live adapter: the scheme lives in
``perpbot.domain.client_ids`` (the bot names its own orders with it too); re-exported here."""

from __future__ import annotations

from perpbot.domain.client_ids import CLIENT_ID_RE, PREFIX, is_valid_client_id, make_client_id

__all__ = ["CLIENT_ID_RE", "PREFIX", "is_valid_client_id", "make_client_id"]
