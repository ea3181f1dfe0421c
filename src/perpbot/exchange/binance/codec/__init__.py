"""One codec between Binance USDT-M JSON and the domain objects and events, in both directions.

Why one codec: the protocol simulator (``perpbot simulate``) *writes* these shapes and the live
adapter *reads* them. If each side had its own idea of a field, the simulator could agree with
itself and still disagree with Binance; with one codec, the round-trip tests
(``tests/simulator/test_codec.py``) pin both sides at once and the real-client tests (ccxt) check
the shapes against an independent parser.

One module per family of shapes, each with both directions of every shape side by side (that is
what makes a mismatch visible in review): ``decimals`` (Binance's decimal strings), ``market``
(``exchangeInfo`` and klines), ``orders`` (normal and algo orders), ``account`` (trades, income,
positions) and ``events`` (the user-data stream).

Types follow Binance's documentation: ids, times and counts are JSON integers, flags are
booleans, prices and quantities are decimal *strings* (``fmt``), never floats or exponents.
"""
