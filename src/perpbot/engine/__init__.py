"""Trading core shared by backtest, paper and live: bot, risk manager, journal, clock."""
