"""Exceptions the client raises."""

from __future__ import annotations


class TickerClientError(Exception):
    """Base class of the client's errors."""


class AuthError(TickerClientError):
    """The server refused the client's credentials; retrying with them cannot help.

    ``code`` is the close code (4401 unauthorized, 4403 forbidden: revoked or expired
    token, deactivated user), or an HTTP status when the handshake itself was refused
    (e.g. 403 for an ``Origin`` the server does not allow), or ``"unauthorized"`` when
    the ``auth`` command was refused.
    """

    def __init__(self, code: int | str, reason: str) -> None:
        super().__init__(f"refused by the server ({code}): {reason}")
        self.code = code
        self.reason = reason


class ConnectFailed(TickerClientError):
    """``max_attempts`` connection attempts in a row failed."""


class ClientClosed(TickerClientError):
    """The client was closed while a call waited on the server."""
