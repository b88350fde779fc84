"""The image API's extra error kinds and Glance's error body.

Besides the shared errors of ``common/errors.py``, Glance answers 410 (an image
deleted while its data was uploading), 415 (a body in the wrong media type)
and 416 (a range past the end of the data). ``glance_error`` renders every
error as webob renders Glance's, ``{"message", "code": "404 Not Found",
"title"}`` (without webob's ``<br />`` decoration), and a 401 the way
keystonemiddleware answers it in front of Glance.
"""

from __future__ import annotations

from tinystack.common.errors import DomainError

__all__ = ["Gone", "UnsupportedMediaType", "RangeNotSatisfiable", "glance_error"]


class Gone(DomainError):
    code = 410
    title = "Gone"


class UnsupportedMediaType(DomainError):
    code = 415
    title = "Unsupported Media Type"


class RangeNotSatisfiable(DomainError):
    code = 416
    title = "Requested Range Not Satisfiable"


def glance_error(code: int, title: str, message: str) -> dict:
    if code == 401:
        return {"error": {"code": 401, "title": "Unauthorized", "message": message}}
    return {"message": message, "code": f"{code} {title}", "title": title}
