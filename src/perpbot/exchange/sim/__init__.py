"""Deterministic simulated Binance USDT-M exchange (matching engine + port adapter)."""
