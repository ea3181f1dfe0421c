"""perpbot: multi-symbol Binance USDT-M perpetual futures bot with an ML entry filter."""

__version__ = "0.1.0"
