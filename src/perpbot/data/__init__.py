"""Market data: schema, validated loading, fetching from Binance, synthetic markets."""
