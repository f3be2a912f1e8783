"""scripts/carry_zip.py: a zip packed as one xz stream comes back with the same members, byte for byte."""

import io
import tarfile
import zipfile

import pytest

from conftest import load_file_module

carry_zip = load_file_module("scripts/carry_zip.py")


def test_round_trip_keeps_every_member(tmp_path) -> None:
    members = {"train/cat/0001.jpg": b"\xff\xd8" + bytes(range(256)) * 3, "train/dog/0002.jpg": b"\xff\xd8dog"}
    source = tmp_path / "train.zip"
    with zipfile.ZipFile(source, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.mkdir("train/")
        for name, data in members.items():
            archive.writestr(name, data)
    carry_zip.pack(source, tmp_path / "packed" / "train.zip.tar.xz")
    carry_zip.unpack(tmp_path / "packed" / "train.zip.tar.xz", tmp_path / "out" / "train.zip")
    with zipfile.ZipFile(tmp_path / "out" / "train.zip") as archive:
        assert {n: archive.read(n) for n in archive.namelist()} == members


def test_a_damaged_member_is_refused(tmp_path) -> None:
    packed = tmp_path / "bad.zip.tar.xz"
    with tarfile.open(packed, "w:xz") as tar:
        info = tarfile.TarInfo("train/cat/0001.jpg")
        info.size, info.pax_headers = 3, {"comment": "crc32=00000000"}
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(SystemExit, match="CRC-32"):
        carry_zip.unpack(packed, tmp_path / "bad.zip")
    assert not (tmp_path / "bad.zip").exists() and not (tmp_path / "bad.zip.partial").exists()
