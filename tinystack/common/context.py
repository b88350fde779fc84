"""Who is calling a service API: the token in ``X-Auth-Token`` made into ``Credentials``.

Every API but identity's takes a ``TokenCheck`` when it is built: a callable
turning a token into ``Credentials`` or raising ``Unauthorized``. In a
controller process it is the identity service's in-process client
(``IdentityComponent.credentials_for``), which shares the identity token
cache, so a check costs a dictionary lookup once a token has been seen.
Each service renders the 401 in its own error shape (its ``ServiceApp``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request

from tinystack.common.errors import Unauthorized
from tinystack.common.policy import Credentials

__all__ = ["TokenCheck", "caller"]

TokenCheck = Callable[[str], Awaitable[Credentials]]

_UNAUTHORIZED = "The request you have made requires authentication."


async def caller(request: Request, check: TokenCheck) -> Credentials:
    """The request's credentials, remembered on the request; 401 without a valid token."""
    known = request.scope.get("tinystack.credentials")
    if known is not None:
        return known
    token = request.headers.get("x-auth-token")
    if not token:
        raise Unauthorized(_UNAUTHORIZED)
    creds = await check(token)
    request.scope["tinystack.credentials"] = creds
    return creds
