"""Unpacking a ``model.tar.gz`` safely: the one archive-safety check of serve, predict, export and the launchers.

Every member header is checked before anything is written (links, devices, absolute paths, ``..``, a file stored
twice, size and count bounds) and, when the archive holds ``manifest.json`` (an export writes it first), a file the
manifest does not list is refused too. Not part of the shipped handler: SageMaker's container unpacks the archive
itself, and the handler verifies the unpacked directory (``cola_bert.inference.verify_artifact``).
"""

from __future__ import annotations

import json
import posixpath
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Any, Dict, List, Optional

from cola_bert.inference import (
    MANIFEST_NAME,
    ArtifactError,
    PathLike,
    _safe_relpath,
    verify_artifact,
)

# Archive bounds, enforced on the member headers before anything is unpacked, so that a gzip bomb (1 GiB of zeros is
# 1 MB compressed) is refused instead of written to disk. Generous for bert-large: its fp32 weights are ~1.34 GB per
# copy (model.pt / model.onnx, plus model.safetensors with hf_fallback), an export holds about ten files and a
# Hugging Face training model.tar.gz a few dozen.
MAX_MEMBER_BYTES = 4 << 30  # one file: three times a bert-large fp32 weight file
MAX_ARCHIVE_BYTES = 8 << 30  # all files together: two copies of bert-large weights with room to spare
MAX_ARCHIVE_MEMBERS = 10000  # files and directories
MAX_MANIFEST_BYTES = 1 << 20  # manifest.json is a few KB


def _member_problem(member: tarfile.TarInfo) -> Optional[str]:
    """Why ``member`` must not be unpacked, or None (plain files and directories inside the archive are fine)."""
    name = posixpath.normpath(member.name.replace("\\", "/"))
    if member.issym() or member.islnk():
        return "a {} to {!r}".format("symbolic link" if member.issym() else "hard link", member.linkname)
    if not (member.isfile() or member.isdir()):
        return "a device, FIFO or other special file"
    if name == ".":
        return None if member.isdir() else "a file without a name"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if not _safe_relpath(name):
        return "a path that leaves the archive ('..')"
    return None


def _archive_listing(archive: tarfile.TarFile, member: tarfile.TarInfo, origin: Any) -> set:
    """The normalised paths that the archive's ``manifest.json`` lists in ``files``, read without unpacking."""
    refusal = (
        "{} contains a manifest.json {}: the archive is corrupt or was not written by `python -m cola_bert.export`. "
        "Refusing the archive before unpacking anything: re-export it."
    )
    if member.size > MAX_MANIFEST_BYTES:
        raise ArtifactError(refusal.format(origin, "of {} bytes (the limit is {})".format(
            member.size, MAX_MANIFEST_BYTES)))
    handle = archive.extractfile(member)
    try:
        manifest = json.loads(handle.read(MAX_MANIFEST_BYTES + 1).decode("utf-8")) if handle else None
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise ArtifactError(refusal.format(origin, "that is not valid JSON ({})".format(err))) from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        raise ArtifactError(refusal.format(origin, "without a `files` object"))
    return {posixpath.normpath(rel) for rel in files if isinstance(rel, str)}


def check_archive_members(archive: tarfile.TarFile, origin: Any = None) -> List[tarfile.TarInfo]:
    """Every member of an open ``model.tar.gz``, after refusing anything that is unsafe to unpack.

    The one archive-safety check, used by ``cola_bert.serve``, ``cola_bert.predict``, ``cola_bert.export`` and the
    deploy and attach launchers: links, devices, absolute paths, ``..`` and a file stored twice (a later copy would silently replace the
    one a scanner looked at) raise ``ArtifactError`` naming the member. Headers are checked one by one, before the
    next member is even read, against ``MAX_ARCHIVE_MEMBERS``, ``MAX_MEMBER_BYTES`` and ``MAX_ARCHIVE_BYTES``. When
    the archive holds a ``manifest.json`` (an export writes it first), a file it does not list is refused too;
    archives without one (a training job's Hugging Face ``model.tar.gz``) get the bounds only.
    """
    origin = origin or getattr(archive, "name", None) or "the archive"
    members: List[tarfile.TarInfo] = []
    seen = set()
    listed = None  # the paths manifest.json lists, once it has been read
    total = 0
    for member in archive:  # header by header: a refusal comes before the next member's data is decompressed
        members.append(member)
        if len(members) > MAX_ARCHIVE_MEMBERS:
            raise ArtifactError(
                "{} has more than {} members; a model artifact holds a few dozen files at most. Refusing the archive "
                "before unpacking anything: check that it is the model.tar.gz you meant, or re-export it with "
                "`python -m cola_bert.export`.".format(origin, MAX_ARCHIVE_MEMBERS)
            )
        if member.size > MAX_MEMBER_BYTES:
            raise ArtifactError(
                "{} contains {!r}, declared as {} bytes, more than the {}-byte limit for one file (a bert-large "
                "weight file is about 1.3 GB; a decompression bomb?). Refusing the archive "
                "before unpacking anything: check that it is the model.tar.gz you meant, or re-export it with "
                "`python -m cola_bert.export`.".format(origin, member.name, member.size, MAX_MEMBER_BYTES)
            )
        total += member.size
        if total > MAX_ARCHIVE_BYTES:
            raise ArtifactError(
                "{} declares more than {} bytes in total (the limit, reached at {!r}); a bert-large artifact with "
                "fallback weights is under 3 GB. Refusing the archive before unpacking anything: check that it is "
                "the model.tar.gz you meant, or re-export it with `python -m cola_bert.export`.".format(
                    origin, MAX_ARCHIVE_BYTES, member.name)
            )
        problem = _member_problem(member)
        if problem is not None:
            raise ArtifactError(
                "{} contains {!r}, which is {}; only plain files and directories inside the archive are unpacked. "
                "Refusing the archive: re-export it with `python -m cola_bert.export`.".format(
                    origin, member.name, problem
                )
            )
        if member.isfile():
            name = posixpath.normpath(member.name.replace("\\", "/"))
            if name in seen:
                raise ArtifactError(
                    "{} contains {!r} twice; the second copy would replace the first when unpacked. Refusing the "
                    "archive: re-export it with `python -m cola_bert.export`.".format(origin, member.name)
                )
            seen.add(name)
            if name == MANIFEST_NAME:
                listed = _archive_listing(archive, member, origin)
            _refuse_unlisted(member, listed, origin)
    for member in members if listed is not None else ():  # files stored before manifest.json (not an export's order)
        _refuse_unlisted(member, listed, origin)
    return members


def _refuse_unlisted(member: tarfile.TarInfo, listed: Optional[set], origin: Any) -> None:
    name = posixpath.normpath(member.name.replace("\\", "/"))
    if listed is not None and member.isfile() and name != MANIFEST_NAME and name not in listed:
        raise ArtifactError(
            "{} contains {!r}, which its {} does not list: an exported archive holds exactly the files its manifest "
            "hashes, so this one was added afterwards. Refusing the archive before unpacking anything: re-export it "
            "with `python -m cola_bert.export`.".format(origin, member.name, MANIFEST_NAME)
        )


def safe_extract(tar_path: PathLike, dest: PathLike) -> Path:
    """Unpack a ``model.tar.gz`` into ``dest`` after ``check_archive_members`` (no links, devices, ``..``, no file
    its manifest.json does not list, size and count bounds): nothing is written unless every member passes."""
    tar_path, dest = Path(tar_path), Path(dest)
    if not tar_path.is_file():
        raise ArtifactError("{} does not exist or is not a file.".format(tar_path))
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(str(tar_path), "r:*") as archive:
            members = check_archive_members(archive, tar_path)
            if hasattr(tarfile, "data_filter"):
                archive.extractall(str(dest), members=members, filter="data")
            else:  # pragma: no cover - Python < 3.8.17 / 3.11.4
                archive.extractall(str(dest), members=members)
            while archive.fileobj.read(1 << 20):  # to the end: gzip checks its CRC only there (tarfile stops early)
                pass
    except ArtifactError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as err:
        raise ArtifactError(
            "{} is not a readable .tar.gz archive ({}: {}); it is truncated or corrupt. Download or export it "
            "again.".format(tar_path, type(err).__name__, err)
        ) from err
    return dest


def verify_tarball(tar_path: PathLike, dest: Optional[PathLike] = None) -> Dict[str, Any]:
    """Unpack ``model.tar.gz`` safely (into ``dest`` or a temporary directory) and ``verify_artifact(strict=True)``.

    What the deploy launcher runs on a local artifact before uploading it; returns the manifest.
    """
    if dest is not None:
        return verify_artifact(safe_extract(tar_path, dest), strict=True)
    with tempfile.TemporaryDirectory(prefix="cola-verify-") as tmp:
        return verify_artifact(safe_extract(tar_path, tmp), strict=True)
