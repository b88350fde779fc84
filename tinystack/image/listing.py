"""``GET /v2/images`` as SQL: who sees what, filters, sorting and marker pagination.

``ImageQuery`` is the parsed query string (``api_images.py`` builds it and
refuses malformed ones); ``select_images`` turns it into one SELECT, the way
Glance's database layer does:

- a non-admin sees public and community images, its own, and shared images
  it is a member of with the wanted ``member_status`` (default accepted);
  without a ``visibility`` filter, community images show only to their owner;
- ``name``, ``id``, ``status``, ``container_format`` and ``disk_format`` take
  ``in:a,b,"c,d"``; ``created_at``/``updated_at`` take ``gt:``, ``gte:``,
  ``eq:``, ``neq:``, ``lt:``, ``lte:`` and an ISO 8601 time; ``<column>_min``
  and ``_max`` bound integer columns; every ``tag`` must be present; other
  names compare a column exactly, or else a custom property;
- the sort keys always end with ``created_at`` and ``id`` so the order is
  total, NULLs sort as '' or 0 on every database, and the marker image's
  values start the page (keyset pagination).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import sqlalchemy as sa

from tinystack.common.errors import BadRequest
from tinystack.common.policy import Credentials
from tinystack.image.models import Image, ImageMember, ImageProperty, ImageTag
from tinystack.image.policy import is_admin

__all__ = ["ImageQuery", "select_images", "visible_clause", "SORT_KEYS", "split_values",
           "split_op", "parse_time", "DEFAULT_LIMIT", "MAX_LIMIT"]

SORT_KEYS = ("name", "status", "container_format", "disk_format", "size", "id", "created_at",
             "updated_at")
IN_COLUMNS = ("name", "id", "status", "container_format", "disk_format")
TIME_COLUMNS = ("created_at", "updated_at")
TIME_OPS = ("gt", "gte", "eq", "neq", "lt", "lte")
INTEGER_COLUMNS = ("size", "virtual_size", "min_disk", "min_ram")
BOOLEAN_COLUMNS = ("protected", "os_hidden")
TEXT_COLUMNS = ("owner", "visibility", "checksum", "os_hash_algo", "os_hash_value")
DEFAULT_LIMIT = 25
MAX_LIMIT = 1000


@dataclass
class ImageQuery:
    limit: int = DEFAULT_LIMIT
    marker: str | None = None
    sort: list[tuple[str, str]] = field(default_factory=lambda: [("created_at", "desc")])
    member_status: str = "accepted"
    visibility: str | None = None
    os_hidden: bool = False
    tags: list[str] = field(default_factory=list)
    filters: dict[str, str] = field(default_factory=dict)
    """Every other parameter: columns, ranges, times, custom properties."""


def split_op(expression: str) -> tuple[str, str]:
    """``"gt:2016-..."`` -> ("gt", "2016-..."); a bare value or time is ("eq", value)."""
    left, sep, right = expression.partition(":")
    if not sep:
        return "eq", expression
    try:
        parse_time(expression)
    except ValueError:
        return left, right
    return "eq", expression


def parse_time(value: str) -> dt.datetime:
    """An ISO 8601 time as naive UTC; ValueError if it is not one."""
    parsed = dt.datetime.fromisoformat(value.strip())
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return parsed


def split_values(text: str) -> list[str]:
    """``a,"b,c",d`` -> ["a", "b,c", "d"]: commas inside double quotes do not split."""
    values, current, quoted = [], [], False
    for char in text:
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            values.append("".join(current))
            current = []
        else:
            current.append(char)
    if quoted:
        raise BadRequest("Invalid filter value: the quotation mark is not closed.")
    values.append("".join(current))
    return values


def visible_clause(creds: Credentials, member_status: str = "all"):
    """The images ``creds`` may list (None: all of them)."""
    if is_admin(creds):
        return None
    shown = [Image.visibility.in_(("public", "community"))]
    project = creds.project_id
    if project:
        membership = sa.select(ImageMember.image_id).where(
            ImageMember.image_id == Image.id, ImageMember.member == project)
        if member_status != "all":
            membership = membership.where(ImageMember.status == member_status)
        shown += [Image.owner == project,
                  sa.and_(Image.visibility == "shared", membership.exists())]
    return sa.or_(*shown)


def _time_condition(column, name: str, expression: str):
    op, text = split_op(expression)
    try:
        when = parse_time(text)
    except ValueError:
        raise BadRequest(f'Bad "{name}" query filter format. Use ISO 8601 DateTime '
                         "notation.") from None
    if op not in TIME_OPS:
        raise BadRequest(f"Unable to filter by unknown operator '{op}'.")
    return {"gt": column > when, "gte": column >= when, "eq": column == when,
            "neq": column != when, "lt": column < when, "lte": column <= when}[op]


def _integer(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise BadRequest("Unable to filter on a range with a non-numeric value.") from None


def _conditions(filters: dict[str, str]) -> list:
    conditions = []
    for name, text in filters.items():
        if name.endswith(("_min", "_max")) and name[:-4] in INTEGER_COLUMNS:
            column, bound = getattr(Image, name[:-4]), _integer(name, text)
            conditions.append(column >= bound if name.endswith("_min") else column <= bound)
        elif name in TIME_COLUMNS:
            conditions.append(_time_condition(getattr(Image, name), name, text))
        elif name in IN_COLUMNS:
            op, value = split_op(text)
            if op == "in":
                conditions.append(getattr(Image, name).in_(split_values(value)))
            elif op == "eq":
                conditions.append(getattr(Image, name) == value)
            else:
                raise BadRequest(f"Unable to filter by unknown operator '{op}'.")
        elif name in INTEGER_COLUMNS:
            conditions.append(getattr(Image, name) == _integer(name, text))
        elif name in BOOLEAN_COLUMNS:
            if text not in ("true", "false"):
                raise BadRequest(f"Invalid value '{text}' for '{name}' filter. Valid values "
                                 "are 'true' or 'false'.")
            conditions.append(getattr(Image, name) == (text == "true"))
        elif name in TEXT_COLUMNS:
            conditions.append(getattr(Image, name) == text)
        else:
            conditions.append(sa.select(ImageProperty.image_id).where(
                ImageProperty.image_id == Image.id, ImageProperty.name == name,
                ImageProperty.value == text).exists())
    return conditions


_NULL_AS = {"name": "", "status": "", "container_format": "", "disk_format": "", "size": 0}


def _sort_column(key: str):
    column = getattr(Image, key)
    return sa.func.coalesce(column, _NULL_AS[key]) if key in _NULL_AS else column


def _after_marker(sort: list[tuple[str, str]], marker: Image):
    """Rows strictly after ``marker`` in ``sort`` order."""
    alternatives = []
    for i, (key, direction) in enumerate(sort):
        group = []
        for earlier, _ in sort[:i]:
            value = getattr(marker, earlier)
            group.append(_sort_column(earlier) == (_NULL_AS.get(earlier) if value is None
                                                   else value))
        value = getattr(marker, key)
        value = _NULL_AS.get(key) if value is None else value
        column = _sort_column(key)
        group.append(column < value if direction == "desc" else column > value)
        alternatives.append(sa.and_(*group))
    return sa.or_(*alternatives)


def full_sort(sort: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The sort with ``created_at`` and ``id`` appended, in the last direction given."""
    sort = list(sort)
    direction = sort[-1][1] if sort else "desc"
    for key in ("created_at", "id"):
        if key not in (k for k, _ in sort):
            sort.append((key, direction))
    return sort


def select_images(creds: Credentials, query: ImageQuery, marker: Image | None):
    """The SELECT for one page of ``query`` as ``creds`` sees it."""
    statement = sa.select(Image)
    shown = visible_clause(creds, query.member_status)
    if shown is not None:
        statement = statement.where(shown)
    if query.visibility is not None:
        if query.visibility != "all":
            statement = statement.where(Image.visibility == query.visibility)
    elif creds.project_id is None:
        statement = statement.where(Image.visibility != "community")
    else:
        statement = statement.where(sa.or_(Image.owner == creds.project_id,
                                           Image.visibility != "community"))
    statement = statement.where(Image.os_hidden == query.os_hidden)
    for tag in query.tags:
        statement = statement.where(sa.select(ImageTag.image_id).where(
            ImageTag.image_id == Image.id, ImageTag.value == tag).exists())
    for condition in _conditions(query.filters):
        statement = statement.where(condition)
    sort = full_sort(query.sort)
    if marker is not None:
        statement = statement.where(_after_marker(sort, marker))
    for key, direction in sort:
        column = _sort_column(key)
        statement = statement.order_by(column.desc() if direction == "desc" else column.asc())
    return statement.limit(query.limit)
