"""The few expected errors a service raises; each knows its HTTP status.

Services raise these; the API layer of each service renders them in that
service's OpenStack error shape (Keystone's ``{"error": {...}}``, Nova's
``{"itemNotFound": {...}}``...). Anything else escaping a handler is a bug and
becomes a logged 500 (``common/http.py``).
"""

from __future__ import annotations

__all__ = [
    "DomainError",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "TooLarge",
    "Unavailable",
]


class DomainError(Exception):
    code = 500
    title = "Internal Server Error"

    def __init__(self, message: str, *, title: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.message = message
        if title:
            self.title = title
        self.headers = headers or {}


class BadRequest(DomainError):
    code = 400
    title = "Bad Request"


class Unauthorized(DomainError):
    code = 401
    title = "Unauthorized"


class Forbidden(DomainError):
    code = 403
    title = "Forbidden"


class NotFound(DomainError):
    code = 404
    title = "Not Found"


class Conflict(DomainError):
    code = 409
    title = "Conflict"


class TooLarge(DomainError):
    code = 413
    title = "Request Entity Too Large"


class Unavailable(DomainError):
    code = 503
    title = "Service Unavailable"
