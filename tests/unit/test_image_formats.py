"""Pure pieces of the image service: format detection and safety, ranges, filter values."""

from __future__ import annotations

import struct

import pytest

from tinystack.common.errors import BadRequest
from tinystack.image.api_data import parse_range
from tinystack.image.errors import RangeNotSatisfiable
from tinystack.image.formats import HEAD_BYTES, Inspector, detect, unsafe_reason
from tinystack.image.listing import split_op, split_values


def qcow2_header(version: int = 3, backing: int = 0, incompatible: int = 0) -> bytes:
    header = b"QFI\xfb" + struct.pack(">IQI", version, backing, 0)
    header = header.ljust(72, b"\0") + struct.pack(">Q", incompatible)
    return header.ljust(HEAD_BYTES, b"\0")


def iso() -> bytes:
    data = bytearray(HEAD_BYTES)
    data[0x8001:0x8006] = b"CD001"
    return bytes(data)


@pytest.mark.parametrize(("head", "fmt"), [
    (qcow2_header(), "qcow2"),
    (b"KDMV" + b"\0" * 100, "vmdk"),
    (b"vhdxfile" + b"\0" * 100, "vhdx"),
    (b"conectix" + b"\0" * 100, "vhd"),
    (b"\0" * 0x40 + b"\x7f\x10\xda\xbe" + b"\0" * 100, "vdi"),
    (iso(), "iso"),
    (b"\0" * HEAD_BYTES, "raw"),
    (b"", "raw"),
])
def test_detect(head, fmt):
    assert detect(head) == fmt


def test_unsafe_qcow2():
    assert unsafe_reason("qcow2", qcow2_header()) is None
    assert "backing file" in unsafe_reason("qcow2", qcow2_header(backing=512))
    assert "external data file" in unsafe_reason("qcow2", qcow2_header(incompatible=4))
    assert "unknown incompatible" in unsafe_reason("qcow2", qcow2_header(incompatible=1 << 40))
    assert "version 9" in unsafe_reason("qcow2", qcow2_header(version=9))


def test_unsafe_vmdk():
    sparse = b"KDMV" + b"\0" * 508 + b'createType="monolithicSparse"'
    assert unsafe_reason("vmdk", sparse) is None
    flat = b"KDMV" + b"\0" * 508 + b'createType="monolithicFlat"'
    assert "monolithicFlat" in unsafe_reason("vmdk", flat)
    assert unsafe_reason("vmdk", b"# Disk DescriptorFile\n") is not None


def test_inspector_decides_after_the_head_in_any_chunking():
    data = qcow2_header() + b"\0" * 1000
    inspector = Inspector("qcow2", "bare")
    for i in range(0, len(data), 999):
        inspector.feed(data[i:i + 999])
    inspector.finish()
    assert inspector.detected == "qcow2"

    wrong = Inspector("raw", "bare")
    with pytest.raises(BadRequest, match="declared raw but the data is qcow2"):
        wrong.feed(data)


def test_inspector_skips_what_glance_does_not_inspect():
    for disk, container in (("aki", "aki"), ("vmdk", "ova"), ("raw", "docker")):
        inspector = Inspector(disk, container)
        inspector.feed(qcow2_header())
        inspector.finish()
        assert inspector.detected is None
    off = Inspector("raw", "bare", enforce=False)
    off.feed(qcow2_header())
    off.finish()


@pytest.mark.parametrize(("range_", "content_range", "size", "wanted"), [
    (None, None, 10, None),
    ("bytes=0-0", None, 10, (0, 1)),
    ("bytes=3-", None, 10, (3, 7)),
    ("bytes=-4", None, 10, (6, 4)),
    ("bytes=-40", None, 10, (0, 10)),
    ("bytes=2-99", None, 10, (2, 8)),
    (None, "bytes 1-2/*", 10, (1, 2)),
    (None, "bytes 1-2/10", 10, (1, 2)),
])
def test_parse_range(range_, content_range, size, wanted):
    assert parse_range(range_, content_range, size) == wanted


@pytest.mark.parametrize(("range_", "content_range", "error"), [
    ("bytes=10-", None, RangeNotSatisfiable),
    ("bytes=-", None, RangeNotSatisfiable),
    ("bytes=4-2", None, RangeNotSatisfiable),
    ("pages=1-2", None, RangeNotSatisfiable),
    ("bytes=1-2,4-5", None, BadRequest),
    (None, "bytes 8-12/*", RangeNotSatisfiable),
    (None, "bytes 12-14/*", RangeNotSatisfiable),
    (None, "nonsense", RangeNotSatisfiable),
])
def test_parse_range_refusals(range_, content_range, error):
    with pytest.raises(error):
        parse_range(range_, content_range, 10)


def test_split_values_and_ops():
    assert split_values('a,"b,c",d') == ["a", "b,c", "d"]
    assert split_values("single") == ["single"]
    with pytest.raises(BadRequest):
        split_values('"open')
    assert split_op("in:a,b") == ("in", "a,b")
    assert split_op("plain") == ("eq", "plain")
    assert split_op("2020-01-01T00:00:00+00:00") == ("eq", "2020-01-01T00:00:00+00:00")
    assert split_op("gte:2020-01-01T00:00:00Z") == ("gte", "2020-01-01T00:00:00Z")
