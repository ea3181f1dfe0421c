"""``perpbot optimize``: strategy-parameter search on anchored walk-forward windows (issue 12).

Modules, one job each: ``space`` (the five parameters and their ranges), ``precompute`` (what a
trial does not change, computed once per symbol and worker), ``windows`` (fold boundaries and
which trades belong to which window), ``scoring`` (the metrics), ``trial`` (one trial = one run of
the real backtest), ``stats`` (PBO by CSCV, deflated Sharpe), ``storage`` (Optuna storage URLs,
study fingerprint), ``worker`` (the trial loop of one process), ``study`` (settings, checks, local
workers), ``analysis`` (statistics and verdict), ``promotion`` (the overrides file), ``report``
(``optimize.json`` and charts), ``run`` (end to end).
"""
