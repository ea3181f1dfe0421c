"""Exchange rejections carrying Binance's error codes, raised by every adapter alike."""

from __future__ import annotations

# Binance USDT-M error codes the bot and the simulator speak.
PRECISION = -1111  # "Precision is over the maximum defined for this asset."
MIN_NOTIONAL = -4164  # "Order's notional must be no smaller than 5 (unless you choose reduce only)."
MARGIN_INSUFFICIENT = -2019  # "Margin is insufficient."
REDUCE_ONLY_REJECTED = -2022  # "ReduceOnly Order is rejected."
# "Order type not supported for this endpoint. Please use the Algo Order API"
CONDITIONAL_ON_ORDER_ENDPOINT = -4120
NO_NEED_TO_CHANGE_MARGIN_TYPE = -4046  # "No need to change margin type." (ignored by the bot)
UNKNOWN_ORDER = -2011  # "Unknown order sent." (cancel of a missing order)
NO_SUCH_ORDER = -2013  # "Order does not exist." (query of an unknown order id / client id)
REQUEST_TIMEOUT = -1007  # "Timeout waiting for response from backend server. Send status unknown; ..."
SERVER_BUSY = -1008  # "Server is currently overloaded with other requests. Please try again ..."
ORDER_WOULD_IMMEDIATELY_TRIGGER = -2021  # "Order would immediately trigger."
INVALID_QUANTITY = -4003  # "Quantity less than or equal to zero."
QTY_BELOW_MIN = -4004  # "Quantity less than minimum quantity."
QTY_ABOVE_MAX = -4005  # "Quantity greater than maximum quantity."
INVALID_SYMBOL = -1121  # "Invalid symbol."
INVALID_ORDER_TYPE = -1116  # "Invalid orderType."
INVALID_LEVERAGE = -4028  # "Leverage N is not valid"
MARGIN_TYPE_WITH_POSITION = -4048  # "Margin type cannot be changed if there exists position."
INVALID_MARGIN_TYPE = -4044  # "The margin type is invalid."
MAX_STOP_ORDERS = -4045  # "Reach max stop order limit." (10 open conditional orders per symbol)


class ExchangeError(Exception):
    """A rejection by the exchange (code < 0 as Binance reports it) or a transport failure (code 0)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ExchangeUnavailable(ExchangeError):
    """Network error, timeout or 5xx: the request's outcome is unknown; callers fail closed."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message)
