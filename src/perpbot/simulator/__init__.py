"""``perpbot simulate``: a Binance USDT-M protocol server (REST + WebSocket) over ``MatchingEngine``.

Modules, one job each: ``config`` (options), ``market`` (candles), ``venue`` (the account: engine +
order records + event fan-out), ``replay`` (the candle clock), ``auth`` (HMAC, keys, time window),
``weights`` (request-weight and order-count limits), ``faults`` (injected failures), ``errors``
(Binance JSON errors), ``rest_public`` / ``rest_account`` / ``rest_orders`` (routes), ``ws_conn``
(connection rules), ``ws_market`` / ``ws_private`` (streams), ``control`` (``/sim/``), ``app``.
"""
