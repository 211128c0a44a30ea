"""Fetch, verify and unpack the official CoLA archive — atomically, so a crash never leaves half a dataset."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

ARCHIVE_NAME = "cola_public_1.1.zip"
EXTRACTED_NAME = "cola_public"


class ArchiveError(RuntimeError):
    """The CoLA archive is missing, unreachable or not the file it should be."""


def sha256_of(path: Path) -> str:
    """Also used by the launchers (channel contents). cola_bert.inference keeps its own copy on purpose: it ships
    alone as the endpoint's code/inference.py, and importing it here would pull torch into the launchers' start-up."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, expected_sha256: str) -> None:
    actual = sha256_of(path)
    if actual != expected_sha256.lower():
        raise ArchiveError(
            f"{path} has sha256 {actual}, expected {expected_sha256}: the file is corrupt, truncated or not the "
            f"official {ARCHIVE_NAME}. Delete it and let the download run again, or copy the official archive there "
            "(data.archive=PATH)."
        )


def download(url: str, dest: Path, timeout: float = 30.0) -> None:
    """Download to `dest` through a temporary file, with a progress bar."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, os.fdopen(fd, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            columns = (*Progress.get_default_columns()[:1], BarColumn(), DownloadColumn(), TransferSpeedColumn())
            with Progress(*columns, transient=True) as progress:
                task = progress.add_task(f"Downloading {dest.name}", total=total)
                for block in iter(lambda: response.read(1 << 16), b""):
                    out.write(block)
                    progress.advance(task, len(block))
        os.replace(tmp_name, dest)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def extract(archive: Path, data_dir: Path) -> Path:
    """Unzip into a temporary sibling directory, then rename it into place."""
    target = data_dir / EXTRACTED_NAME
    tmp_dir = Path(tempfile.mkdtemp(prefix=".extract-", dir=data_dir))
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp_dir)
        if not (tmp_dir / EXTRACTED_NAME / "raw").is_dir():
            raise ArchiveError(f"{archive} does not contain {EXTRACTED_NAME}/raw/: it is not the CoLA archive.")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp_dir / EXTRACTED_NAME, target)
    except zipfile.BadZipFile as err:
        raise ArchiveError(f"{archive} is not a valid zip file ({err}).") from err
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return target


def ensure_cola(data_dir: Path, url: str, sha256: str, archive: str | os.PathLike | None = None) -> Path:
    """Return `data_dir/cola_public`, taking the archive from `archive`, `data_dir`, or the official URL.

    The archive is always checksum-verified before anything is extracted.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    extracted = data_dir / EXTRACTED_NAME
    stamp = extracted / ".sha256"
    extracted_ok = stamp.is_file() and stamp.read_text().strip() == sha256.lower()

    downloaded = False
    if archive is not None:
        # An archive named on purpose is checked every time, even when a verified copy is already extracted.
        source = Path(archive).expanduser()
        if not source.is_file():
            raise ArchiveError(f"data.archive={archive} does not exist. Give the path of {ARCHIVE_NAME}.")
        verify(source, sha256)
        if extracted_ok:
            return extracted
    elif extracted_ok:
        return extracted
    else:
        source = data_dir / ARCHIVE_NAME
        if not source.is_file():
            try:
                download(url, source)
                downloaded = True
            except (urllib.error.URLError, OSError, TimeoutError) as err:
                raise ArchiveError(
                    f"The CoLA archive is not in {data_dir} and could not be downloaded from {url} ({err}). "
                    f"If this machine is offline, copy the official {ARCHIVE_NAME} (sha256 {sha256}) to "
                    f"{source}, or pass its location with data.archive=/path/to/{ARCHIVE_NAME}; you can also "
                    "train on your own files with data.train_file=... data.val_file=...."
                ) from err
    try:
        verify(source, sha256)
    except ArchiveError:
        if downloaded:  # never keep a bad download around to be trusted next time
            source.unlink(missing_ok=True)
        raise
    extracted = extract(source, data_dir)
    tmp_stamp = stamp.with_suffix(".tmp")
    tmp_stamp.write_text(sha256.lower())
    os.replace(tmp_stamp, stamp)
    return extracted
