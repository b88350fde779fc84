"""The errors a bus user sees.

Three kinds, so a caller can tell them apart:

- `BusError`: the bus itself failed (not started, closed under a pending call, broker gone).
- `BusTimeout`: nobody answered in time: nobody serves the target, its server died, or the
  broker could not take the message. Also a `TimeoutError`, so generic code can catch it.
- `RemoteError`: the server ran the method and it raised. Carries the remote exception's
  class name and message (and its traceback text for the logs), never the object itself.

`NoSuchMethod` is what a server raises when asked for a method its endpoint does not offer;
the caller sees it as `RemoteError` with `exc_type == "NoSuchMethod"`.

Who raises what is in interface.py; read that next.
"""

from __future__ import annotations

__all__ = ["BusError", "BusTimeout", "NoSuchMethod", "RemoteError"]


class BusError(Exception):
    """The bus could not do what was asked."""


class BusTimeout(BusError, TimeoutError):
    """No reply within the deadline.

    The message names the target, the method and the seconds waited, e.g.
    "no reply from compute.host1 to spawn_server within 2.0 s".
    """


class NoSuchMethod(BusError):
    """The endpoint serving a target has no public async method of that name."""


class RemoteError(BusError):
    """A served method raised; this is the caller's copy of that failure.

    Attributes:
        exc_type: class name of the remote exception, e.g. "ValueError".
        message: str() of the remote exception.
        target, method: where the call went.
        remote_traceback: the formatted remote traceback (for logs, may be "").
    """

    def __init__(
        self,
        exc_type: str,
        message: str,
        *,
        target: str = "",
        method: str = "",
        remote_traceback: str = "",
    ) -> None:
        self.exc_type = exc_type
        self.message = message
        self.target = target
        self.method = method
        self.remote_traceback = remote_traceback
        super().__init__(f"{exc_type}: {message} (raised by {method} on {target})")
