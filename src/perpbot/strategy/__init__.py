"""Indicators and the rule-based entry signal (SPEC §3)."""
