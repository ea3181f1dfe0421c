"""Operator alerts: the Discord webhook delivery worker, secret redaction, mode tags, and the
runtime's own alert sources (stream outages). Message text is built in ``engine.notifier``."""
