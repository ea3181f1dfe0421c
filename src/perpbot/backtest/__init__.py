"""Multi-symbol backtester: runs the real bots over recorded candles against the simulator."""
