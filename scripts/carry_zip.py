"""Shrink a data zip for the GPU machine's 64 MiB carry, and rebuild it there with the same members.

    python scripts/carry_zip.py pack   ../shared/data/cifar10/train.zip .carry/order/cifar10/train.zip.tar.xz
    python scripts/carry_zip.py unpack .carry/order/cifar10/train.zip.tar.xz .carry/order/cifar10/train.zip

``scripts/gpu_workflow.sh`` unpacks every ``<name>.zip.tar.xz`` under the data root to ``<name>.zip`` first.

Why: a zip compresses each member alone, so 50,000 small JPEGs each repeat their ~600 bytes of Huffman and
quantization tables. One solid xz stream shares them: CIFAR-10's train.zip goes from 52 to 15 MiB. The
rebuilt zip holds byte-identical members (checked by CRC-32 on unpacking), and the loaders read members by
sorted name, so the decoded images and labels are the same.
"""

from __future__ import annotations

import argparse
import tarfile
import zipfile
import zlib
from pathlib import Path


def pack(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(source) as archive, tarfile.open(target, "w:xz", preset=6) as tar:
        for member in sorted(archive.infolist(), key=lambda m: m.filename):
            if member.is_dir():
                continue
            info = tarfile.TarInfo(member.filename)
            info.size = member.file_size
            info.pax_headers = {"comment": f"crc32={member.CRC:08x}"}
            with archive.open(member) as handle:
                tar.addfile(info, handle)


def unpack(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        with tarfile.open(source, "r:xz") as tar, zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as archive:
            for info in tar:
                data = tar.extractfile(info).read()
                expected = info.pax_headers.get("comment", "").removeprefix("crc32=")
                if expected and f"{zlib.crc32(data):08x}" != expected:
                    raise SystemExit(f"{source}: member {info.name} fails its CRC-32. Fix: pack it again.")
                archive.writestr(info.name, data)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)  # nothing half-written is left behind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["pack", "unpack"])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args()
    (pack if args.action == "pack" else unpack)(args.source, args.target)


if __name__ == "__main__":
    main()
