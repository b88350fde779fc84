"""The image records and their rules: create, read, list, patch, delete, status moves.

Every method is synchronous, opens its own transaction and returns detached
``Image`` rows (properties and tags loaded); ``api_*.py`` runs them in worker
threads. A method acting on one image first finds it *as the caller sees it*
(an image the caller may not see is "No image found", a 404, never a 403),
then calls the ``authorize`` hook the API passes in (its policy check, which
needs the image's owner), then applies Glance's domain rules.

Status moves follow Glance's state machine (``TRANSITIONS``); every move is
checked against the state read in the same transaction, so two uploads
racing for one ``queued`` image cannot both win. Moving data is not done
here: ``transfer.py`` streams bytes into a store, ``importing.py`` runs the
import methods, and this module records the outcome (``finish_upload``) or
puts the image back (``restore``). Members are in ``sharing.py``; the SQL of
listing in ``listing.py``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tinystack.common.db import Database, utcnow
from tinystack.common.errors import BadRequest, Conflict, Forbidden, NotFound, TooLarge
from tinystack.common.policy import Credentials
from tinystack.config import ImageSettings
from tinystack.image.errors import Gone
from tinystack.image.listing import ImageQuery, select_images
from tinystack.image.models import Image, ImageMember, ImageProperty, ImageTag
from tinystack.image.policy import is_admin
from tinystack.image.transfer import Received, SizeLimit

__all__ = ["ImageService", "Change", "Authorize", "TRANSITIONS", "HASH_ALGO", "LIMITS",
           "check_count"]

log = logging.getLogger(__name__)

Authorize = Callable[[Image], None]
HASH_ALGO = "sha512"

TRANSITIONS: dict[str, tuple[str, ...]] = {
    "queued": ("saving", "uploading", "importing", "active", "deleted"),
    "saving": ("active", "killed", "deleted", "queued"),
    "uploading": ("importing", "queued", "deleted"),
    "importing": ("active", "deleted", "queued"),
    "active": ("pending_delete", "deleted", "deactivated"),
    "killed": ("deleted",),
    "pending_delete": ("deleted", "active"),
    "deleted": (),
    "deactivated": ("active", "deleted"),
}

LIMITS = {"properties": 128, "tags": 128, "members": 128}
"""Glance's image_property_quota, image_tag_quota and image_member_quota defaults."""

SETTABLE = ("name", "visibility", "protected", "os_hidden", "min_disk", "min_ram",
            "container_format", "disk_format", "owner")


@dataclass(frozen=True)
class Change:
    """One JSON-patch operation, parsed: ``path`` is the decoded pointer."""

    op: str  # "add" | "replace" | "remove"
    path: tuple[str, ...]
    value: Any = None


def check_count(kind: str, attempted: int) -> None:
    if attempted > LIMITS[kind]:
        noun = {"properties": "image properties", "tags": "image tags",
                "members": "image members for this image"}[kind]
        raise TooLarge(f"The limit has been exceeded on the number of allowed {noun}. "
                       f"Attempted: {attempted}, Maximum: {LIMITS[kind]}")


def _check_non_negative(name: str, value: Any) -> None:
    if isinstance(value, int) and value < 0:
        raise BadRequest(f"Invalid value '{value}' for parameter '{name}': Cannot be a "
                         "negative value.")


class ImageService:
    def __init__(self, db: Database, conf: ImageSettings):
        self.db = db
        self.conf = conf

    # -- finding ----------------------------------------------------------------

    @staticmethod
    def can_see(s: Session, creds: Credentials, image: Image) -> bool:
        if is_admin(creds) or image.owner is None:
            return True
        if image.visibility in ("public", "community"):
            return True
        project = creds.project_id
        if project is None:
            return False
        if image.owner == project:
            return True
        return image.visibility == "shared" and s.get(ImageMember, (image.id, project)) is not None

    def find(self, s: Session, creds: Credentials, image_id: str, *,
             for_update: bool = False) -> Image:
        image = s.get(Image, image_id, with_for_update=for_update or None)
        if image is None or not self.can_see(s, creds, image):
            raise NotFound(f"No image found with ID {image_id}")
        return image

    def get(self, creds: Credentials, image_id: str, authorize: Authorize | None = None) -> Image:
        with self.db.session() as s:
            image = self.find(s, creds, image_id)
            if authorize:
                authorize(image)
            return image

    def list(self, creds: Credentials, query: ImageQuery) -> tuple[list[Image], str | None]:
        """A page of images and the marker of the next page (None on the last)."""
        with self.db.session() as s:
            marker = None
            if query.marker is not None:
                marker = s.get(Image, query.marker)
                if marker is None or not self.can_see(s, creds, marker):
                    raise BadRequest(f"No image found with ID {query.marker}")
            images = list(s.scalars(select_images(creds, query, marker)))
            next_marker = images[-1].id if images and len(images) == query.limit else None
            return images, next_marker

    # -- create, update, delete ---------------------------------------------------

    def create(self, creds: Credentials, base: dict, extra: dict[str, str], tags: Iterable[str],
               authorize: Authorize | None = None) -> Image:
        image_id = base.pop("id", None) or str(uuid.uuid4())
        for name in ("min_disk", "min_ram"):
            _check_non_negative(name, base.get(name))
        tags = sorted(set(tags))
        check_count("properties", len(extra))
        check_count("tags", len(tags))
        now = utcnow()
        fields = {"owner": creds.project_id, "visibility": "shared", "min_disk": 0,
                  "min_ram": 0, "protected": False, "os_hidden": False, **base}
        image = Image(id=image_id, status="queued", created_at=now, updated_at=now, **fields)
        image.properties = [ImageProperty(name=k, value=v) for k, v in extra.items()]
        image.tags = [ImageTag(value=t) for t in tags]
        if authorize:
            authorize(image)
        with self.db.session() as s:
            if s.get(Image, image_id) is not None:
                raise Conflict(f"Image with identifier {image_id} already exists!")
            s.add(image)
            try:
                s.flush()
            except sa.exc.IntegrityError:
                raise Conflict(f"Image with identifier {image_id} already exists!") from None
        return self.get(creds, image_id)

    def update(self, creds: Credentials, image_id: str, changes: list[Change],
               authorize: Callable[[Image, list[Change]], None] | None = None) -> Image:
        with self.db.session() as s:
            image = self.find(s, creds, image_id, for_update=True)
            if authorize:
                authorize(image, changes)
            extra = image.extra
            tags = image.tag_values
            for change in changes:
                tags = self._apply(creds, image, extra, tags, change)
            check_count("properties", len(extra))
            check_count("tags", len(tags))
            if changes:
                self._store_extra(image, extra)
                self._store_tags(image, tags)
                image.updated_at = utcnow()
        return self.get(creds, image_id)

    def _apply(self, creds: Credentials, image: Image, extra: dict, tags: list[str],
               change: Change) -> list[str]:
        root = change.path[0]
        if root == "locations":
            verb = {"replace": "update", "add": "add", "remove": "remove"}[change.op]
            raise Forbidden(f"It's not allowed to {verb} locations if locations are invisible.")
        if change.op == "remove":
            if root in SETTABLE or root == "tags":
                raise Forbidden(f"Property {root} may not be removed.")
            if root not in extra:
                raise Conflict(f"Property {root} does not exist.")
            del extra[root]
            return tags
        if root == "tags":
            return sorted(set(change.value))
        if root in SETTABLE:
            self._set_base(creds, image, root, change.value)
        elif change.op == "replace" and root not in extra:
            raise Conflict(f"Property {root} does not exist.")
        elif change.value is None:
            extra.pop(root, None)
        else:
            extra[root] = change.value
        return tags

    @staticmethod
    def _set_base(creds: Credentials, image: Image, name: str, value: Any) -> None:
        if name == "owner" and not is_admin(creds):
            raise Forbidden("Owner can't be updated by non admin.")
        if name in ("container_format", "disk_format") and image.status != "queued":
            raise Forbidden(f"Attribute {name} can be only replaced for a queued image.")
        _check_non_negative(name, value)
        setattr(image, name, value)

    @staticmethod
    def _store_extra(image: Image, extra: dict[str, str]) -> None:
        kept = {p.name: p for p in image.properties}
        image.properties = [kept[k] if k in kept and kept[k].value == v
                            else ImageProperty(name=k, value=v) for k, v in extra.items()]

    @staticmethod
    def _store_tags(image: Image, tags: list[str]) -> None:
        kept = {t.value: t for t in image.tags}
        image.tags = [kept.get(t) or ImageTag(value=t) for t in tags]

    def delete(self, creds: Credentials, image_id: str,
               authorize: Authorize | None = None) -> Image:
        """Forget the image; the deleted row (its ``location`` tells what data to remove)."""
        with self.db.session() as s:
            image = self.find(s, creds, image_id, for_update=True)
            if authorize:
                authorize(image)
            if image.protected:
                raise Forbidden(f"Image {image_id} is protected and cannot be deleted.")
            s.execute(sa.delete(ImageMember).where(ImageMember.image_id == image_id))
            s.delete(image)
        return image

    # -- actions and tags ---------------------------------------------------------

    def deactivate(self, creds: Credentials, image_id: str, authorize: Authorize) -> None:
        self._toggle(creds, image_id, authorize, "deactivated", "deactivate")

    def reactivate(self, creds: Credentials, image_id: str, authorize: Authorize) -> None:
        self._toggle(creds, image_id, authorize, "active", "reactivate")

    def _toggle(self, creds: Credentials, image_id: str, authorize: Authorize, wanted: str,
                verb: str) -> None:
        with self.db.session() as s:
            image = self.find(s, creds, image_id, for_update=True)
            authorize(image)
            if image.status == wanted:
                return
            if image.status not in ("active", "deactivated"):
                raise Forbidden(f"Not allowed to {verb} image in status '{image.status}'")
            image.status = wanted
            image.updated_at = utcnow()

    def add_tag(self, creds: Credentials, image_id: str, tag: str, authorize: Authorize) -> None:
        with self.db.session() as s:
            image = self.find(s, creds, image_id, for_update=True)
            authorize(image)
            if tag in image.tag_values:
                return
            check_count("tags", len(image.tags) + 1)
            image.tags.append(ImageTag(value=tag))
            image.updated_at = utcnow()

    def remove_tag(self, creds: Credentials, image_id: str, tag: str,
                   authorize: Authorize) -> None:
        with self.db.session() as s:
            image = self.find(s, creds, image_id, for_update=True)
            authorize(image)
            found = [t for t in image.tags if t.value == tag]
            if not found:
                raise NotFound(f"Tag {tag} not found.")
            image.tags.remove(found[0])
            image.updated_at = utcnow()

    # -- status moves around data ----------------------------------------------------

    @staticmethod
    def _move(image: Image, to: str) -> None:
        if to not in TRANSITIONS[image.status]:
            raise Conflict(f"Image status transition from {image.status} to {to} is not "
                           "allowed")
        if image.status == "queued" and to in ("saving", "active", "uploading"):
            missing = [k for k in ("disk_format", "container_format") if not getattr(image, k)]
            if missing:
                noun = "Property" if len(missing) == 1 else "Properties"
                raise BadRequest(f"{noun} {', '.join(missing)} must be set prior to saving "
                                 "data.")
        if to == "queued":
            image.size = None
        image.status = to
        image.updated_at = utcnow()

    def begin(self, creds: Credentials, image_id: str, to: str, authorize: Authorize) -> Image:
        """Move an image the caller may change to ``to`` (``saving``, ``uploading``)."""
        with self.db.session() as s:
            image = self.find(s, creds, image_id, for_update=True)
            authorize(image)
            self._move(image, to)
            return image

    def begin_import(self, creds: Credentials, image_id: str, method: str, authorize: Authorize,
                     precheck: Callable[[], None] | None = None) -> Image:
        """Glance's import checks, in its order, then the move to ``importing``."""
        with self.db.session() as s:
            image = self.find(s, creds, image_id, for_update=True)
            if image.status == "active":
                raise Conflict("Image with status active cannot be target for import")
            if method == "web-download" and image.status != "queued":
                raise Conflict("Image needs to be in 'queued' state to use 'web-download' "
                               "method")
            if method == "glance-direct" and image.status != "uploading":
                raise Conflict("Image needs to be staged before 'glance-direct' method can be "
                               "used")
            for name in ("container_format", "disk_format"):
                if not getattr(image, name):
                    raise Conflict(f"'{name}' needs to be set before import")
            authorize(image)
            if precheck:
                precheck()
            self._move(image, "importing")
            self._set_extra(image, "os_glance_importing_to_stores", "file")
            self._set_extra(image, "os_glance_failed_import", None)
            return image

    def _limit(self, s: Session, owner: str | None, image_id: str = "") -> SizeLimit:
        """The cap, and the quota with what ``owner`` keeps besides ``image_id``."""
        used = 0
        if self.conf.user_storage_quota and owner:
            used = s.scalar(sa.select(sa.func.coalesce(sa.func.sum(Image.size), 0)).where(
                Image.owner == owner, Image.id != image_id, Image.location.is_not(None))) or 0
        return SizeLimit(cap=self.conf.image_size_cap, quota=self.conf.user_storage_quota,
                         used=int(used))

    def limit_for(self, owner: str | None, image_id: str = "") -> SizeLimit:
        """The cap and quota an upload to an image of ``owner`` is held to."""
        with self.db.session() as s:
            return self._limit(s, owner, image_id)

    def check_quota(self, project_id: str | None) -> None:
        """Glance refuses to start an upload once the project is at its quota."""
        limit = self.limit_for(project_id)
        if limit.quota and limit.used >= limit.quota:
            raise TooLarge(f"Denying attempt to upload image because it exceeds the quota: The "
                           f"project already keeps {limit.used} bytes of image data, its "
                           f"quota is {limit.quota} bytes.")

    def finish_upload(self, image_id: str, received: Received, virtual_size: int | None,
                      expect: str) -> Image:
        """Record stored data: ``expect`` -> active. ``Gone`` if the image went away."""
        with self.db.session() as s:
            image = s.get(Image, image_id, with_for_update=True)
            if image is None or image.status != expect:
                raise Gone(f"Image {image_id} could not be found after upload. The image may "
                           "have been deleted during the upload, cleaning up the chunks "
                           "uploaded.")
            self._limit(s, image.owner, image.id).check(received.size)
            self._move(image, "active")
            image.size = received.size
            image.virtual_size = virtual_size
            image.checksum = received.checksum
            image.os_hash_algo = HASH_ALGO
            image.os_hash_value = received.os_hash_value
            image.location = received.location
            self._set_extra(image, "os_glance_importing_to_stores", None)
            return image

    def finish_stage(self, image_id: str, size: int) -> None:
        with self.db.session() as s:
            image = s.get(Image, image_id, with_for_update=True)
            if image is None or image.status != "uploading":
                raise Gone(f"Image {image_id} could not be found after staging.")
            image.size = size
            image.updated_at = utcnow()

    def restore(self, image_id: str, expect: tuple[str, ...], failed_import: bool = False) -> None:
        """Put an image whose transfer failed back to ``queued`` (if it is still there)."""
        with self.db.session() as s:
            image = s.get(Image, image_id, with_for_update=True)
            if image is None or image.status not in expect:
                return
            self._move(image, "queued")
            if failed_import:
                self._set_extra(image, "os_glance_importing_to_stores", None)
                self._set_extra(image, "os_glance_failed_import", "file")

    def interrupted(self) -> list[Image]:
        """Images a stopped process left mid-transfer (saving, uploading, importing)."""
        with self.db.session() as s:
            return list(s.scalars(sa.select(Image).where(
                Image.status.in_(("saving", "uploading", "importing")))))

    def with_property(self, name: str) -> list[Image]:
        """Every image carrying the custom property ``name``, oldest first."""
        with self.db.session() as s:
            return list(s.scalars(sa.select(Image).join(ImageProperty).where(
                ImageProperty.name == name).order_by(Image.created_at, Image.id)))

    def locations(self) -> set[str]:
        with self.db.session() as s:
            return set(s.scalars(sa.select(Image.location).where(Image.location.is_not(None))))

    @staticmethod
    def _set_extra(image: Image, name: str, value: str | None) -> None:
        for prop in list(image.properties):
            if prop.name == name:
                if value is None:
                    image.properties.remove(prop)
                else:
                    prop.value = value
                return
        if value is not None:
            image.properties.append(ImageProperty(name=name, value=value))
