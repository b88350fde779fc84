"""The image service's tables: images, their custom properties, tags and members.

An image row holds Glance's base properties; custom properties (``os_distro``,
``kernel_id``...) are rows of ``image_properties`` so a list can filter on
them in SQL, as Glance's ``image_properties`` table does. ``location`` is the
store's own locator for the data (``FileStore`` writes ``file://...``), set
only while the image has data. A deleted image is gone (no soft delete): its
rows go with it.

Names, tags and property keys compare case-sensitively on every database (a
binary collation on MariaDB). Only ``service.py`` and ``sharing.py`` use these;
read ``service.py`` next.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tinystack.common.db import Base, utcnow

__all__ = ["Image", "ImageProperty", "ImageTag", "ImageMember"]

ID = sa.String(36)
EXACT = sa.String(255).with_variant(mysql.VARCHAR(255, collation="utf8mb4_bin"), "mysql")
"""A 255-character string compared byte for byte, even where the default collation folds case."""
WHEN = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
"""A timestamp to the microsecond everywhere (MariaDB's default keeps whole seconds), so the
newest-first order of a list does not fall back on ids within a second."""


class Image(Base):
    __tablename__ = "image_images"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str | None] = mapped_column(EXACT, index=True)
    status: Mapped[str] = mapped_column(sa.String(30), index=True)
    visibility: Mapped[str] = mapped_column(sa.String(20), index=True)
    owner: Mapped[str | None] = mapped_column(sa.String(255), index=True)
    disk_format: Mapped[str | None] = mapped_column(sa.String(20))
    container_format: Mapped[str | None] = mapped_column(sa.String(20))
    size: Mapped[int | None] = mapped_column(sa.BigInteger)
    virtual_size: Mapped[int | None] = mapped_column(sa.BigInteger)
    checksum: Mapped[str | None] = mapped_column(sa.String(32))
    os_hash_algo: Mapped[str | None] = mapped_column(sa.String(64))
    os_hash_value: Mapped[str | None] = mapped_column(sa.String(128), index=True)
    min_disk: Mapped[int] = mapped_column(default=0)
    min_ram: Mapped[int] = mapped_column(default=0)
    protected: Mapped[bool] = mapped_column(default=False)
    os_hidden: Mapped[bool] = mapped_column(default=False)
    location: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime] = mapped_column(WHEN, default=utcnow, index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(WHEN, default=utcnow)

    properties: Mapped[list[ImageProperty]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", passive_deletes=True)
    tags: Mapped[list[ImageTag]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", passive_deletes=True)

    @property
    def extra(self) -> dict[str, str]:
        """The custom properties as a dict."""
        return {p.name: p.value for p in self.properties}

    @property
    def tag_values(self) -> list[str]:
        return sorted(t.value for t in self.tags)


class ImageProperty(Base):
    __tablename__ = "image_properties"
    image_id: Mapped[str] = mapped_column(
        ID, sa.ForeignKey("image_images.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(EXACT, primary_key=True)
    value: Mapped[str] = mapped_column(sa.Text)


class ImageTag(Base):
    __tablename__ = "image_tags"
    image_id: Mapped[str] = mapped_column(
        ID, sa.ForeignKey("image_images.id", ondelete="CASCADE"), primary_key=True)
    value: Mapped[str] = mapped_column(EXACT, primary_key=True)


class ImageMember(Base):
    __tablename__ = "image_members"
    image_id: Mapped[str] = mapped_column(
        ID, sa.ForeignKey("image_images.id", ondelete="CASCADE"), primary_key=True)
    member: Mapped[str] = mapped_column(sa.String(255), primary_key=True, index=True)
    status: Mapped[str] = mapped_column(sa.String(20), default="pending")
    created_at: Mapped[dt.datetime] = mapped_column(WHEN, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(WHEN, default=utcnow)
