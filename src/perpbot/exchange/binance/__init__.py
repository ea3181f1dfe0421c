"""Binance USDT-M wire format: the one codec shared by the protocol simulator and the live adapter."""
