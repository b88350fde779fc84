"""Image members: sharing a ``shared`` image with other projects, who accept or reject it.

Glance's rules, enforced here after the API's policy check (the
``authorize`` hook): only a ``shared`` image has members; only its owner (or
an admin) adds and removes them; only the member project itself (or an
admin) sets a membership's status (``pending`` -> ``accepted``/``rejected``);
the owner sees every member, a member sees only its own membership. An
image the caller may not see is a 404, as everywhere (``service.find``).
"""

from __future__ import annotations

from tinystack.common.db import utcnow
from tinystack.common.errors import BadRequest, Conflict, Forbidden, NotFound
from tinystack.common.policy import Credentials
from tinystack.image.models import Image, ImageMember
from tinystack.image.policy import is_admin
from tinystack.image.service import Authorize, ImageService, check_count

__all__ = ["MemberService", "MEMBER_STATUSES"]

MEMBER_STATUSES = ("pending", "accepted", "rejected")


def _shared_only(image: Image) -> None:
    if image.visibility != "shared":
        raise Forbidden("Only shared images have members.")


def _not_a_member(image_id: str, member_id: str) -> NotFound:
    return NotFound(f"{member_id} not found in the member list of the image {image_id}.")


class MemberService:
    def __init__(self, images: ImageService):
        self.images = images
        self.db = images.db

    def list(self, creds: Credentials, image_id: str, authorize: Authorize) -> list[ImageMember]:
        with self.db.session() as s:
            image = self.images.find(s, creds, image_id)
            authorize(image)
            _shared_only(image)
            members = list(s.query(ImageMember).filter(ImageMember.image_id == image_id)
                           .order_by(ImageMember.created_at, ImageMember.member))
            if is_admin(creds) or image.owner == creds.project_id:
                return members
            return [m for m in members if m.member == creds.project_id]

    def get(self, creds: Credentials, image_id: str, member_id: str,
            authorize: Authorize) -> ImageMember:
        with self.db.session() as s:
            image = self.images.find(s, creds, image_id)
            authorize(image)
            _shared_only(image)
            member = s.get(ImageMember, (image_id, member_id))
            mine = is_admin(creds) or creds.project_id in (image.owner, member_id)
            if member is None or not mine:
                raise _not_a_member(image_id, member_id)
            return member

    def add(self, creds: Credentials, image_id: str, member_id: str,
            authorize: Authorize) -> ImageMember:
        with self.db.session() as s:
            image = self.images.find(s, creds, image_id, for_update=True)
            authorize(image)
            _shared_only(image)
            if not is_admin(creds) and (image.owner is None or image.owner != creds.project_id):
                raise Forbidden("You are not permitted to create image members for the image.")
            if s.get(ImageMember, (image_id, member_id)) is not None:
                raise Conflict(f"Member {member_id} is duplicated for image {image_id}")
            count = s.query(ImageMember).filter(ImageMember.image_id == image_id).count()
            check_count("members", count + 1)
            now = utcnow()
            member = ImageMember(image_id=image_id, member=member_id, status="pending",
                                 created_at=now, updated_at=now)
            s.add(member)
            s.flush()
            return member

    def update(self, creds: Credentials, image_id: str, member_id: str, status: object,
               authorize: Authorize) -> ImageMember:
        with self.db.session() as s:
            image = self.images.find(s, creds, image_id)
            _shared_only(image)
            member = s.get(ImageMember, (image_id, member_id), with_for_update=True)
            if member is None:
                raise _not_a_member(image_id, member_id)
            if not is_admin(creds) and creds.project_id == image.owner:
                raise Forbidden("You are not permitted to modify 'status' on this image "
                                "member.")
            authorize(image)
            if status not in MEMBER_STATUSES:
                raise BadRequest('Incorrect request: Status must be "pending", "accepted" or '
                                 '"rejected".')
            member.status = status
            member.updated_at = utcnow()
            return member

    def remove(self, creds: Credentials, image_id: str, member_id: str,
               authorize: Authorize) -> None:
        with self.db.session() as s:
            image = self.images.find(s, creds, image_id)
            authorize(image)
            _shared_only(image)
            if not is_admin(creds) and creds.project_id != image.owner:
                raise Forbidden("You cannot delete image member.")
            member = s.get(ImageMember, (image_id, member_id))
            if member is None:
                raise _not_a_member(image_id, member_id)
            s.delete(member)
