"""Safe download and extraction of dataset archives (zip, tar, tar.gz)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import stat
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cxrmim.io import atomic_path

__all__ = ["fetch_source", "is_archive", "safe_extract", "sha256_file"]

log = logging.getLogger(__name__)

MARKER = ".cxrmim-extracted.json"
URL_PATTERN = re.compile(r"^(https?|ftp|file)://", re.IGNORECASE)
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
ARCHIVE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tar", ".zip")
CHUNK = 1 << 20


@dataclass(frozen=True)
class _Entry:
    """One archive member reduced to what the safety checks need."""

    name: str
    kind: str  # "file", "dir", "symlink", "hardlink" or "special"
    link: str = ""


# ----------------------------------------------------------------------------- hashing


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _normalise_sha256(sha256: str | None) -> str | None:
    """Lower-case a SHA-256 and check it is 64 hex digits."""
    if sha256 is None:
        return None
    value = str(sha256).strip().lower()
    if not SHA256_PATTERN.match(value):
        raise ValueError(
            f"dataset.sha256 {sha256!r} is not a SHA-256 digest (64 hex digits); compute it with `sha256sum FILE`"
        )
    return value


# ----------------------------------------------------------------------------- archive listing


def _zip_entries(archive: Path) -> list[_Entry]:
    """Entries of a zip file; symlinks are recognised from the Unix mode bits."""
    entries = []
    with zipfile.ZipFile(archive) as handle:
        for info in handle.infolist():
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                entries.append(_Entry(info.filename, "symlink", handle.read(info).decode("utf-8", "replace")))
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
                entries.append(_Entry(info.filename, "special"))
            else:
                entries.append(_Entry(info.filename, "dir" if info.is_dir() else "file"))
    return entries


def _tar_kind(member: tarfile.TarInfo) -> str:
    """Classify a tar member."""
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    if member.isdir():
        return "dir"
    if member.isfile():
        return "file"
    return "special"  # character/block devices, FIFOs


def _tar_entries(archive: Path) -> list[_Entry]:
    """Entries of a (possibly compressed) tar file."""
    with tarfile.open(archive) as handle:
        return [_Entry(m.name, _tar_kind(m), m.linkname) for m in handle.getmembers()]


# ----------------------------------------------------------------------------- safety checks


def _parts(name: str) -> list[str] | None:
    """Split an entry path into components; None when it is absolute (POSIX, Windows drive or UNC)."""
    name = name.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return None
    return [p for p in PurePosixPath(name).parts if p not in ("", ".")]


def _walk(start: list[str], steps: list[str], links: set[tuple[str, ...]]) -> list[str] | None:
    """Follow path steps from `start` inside the archive root; None if it leaves the root or passes a link."""
    path = list(start)
    for step in steps:
        if tuple(path) in links:  # going on from a link member (even by '..') could end anywhere
            return None
        if step != "..":
            path.append(step)
        elif path:
            path.pop()
        else:
            return None
    return path


def _entry_problem(entry: _Entry, links: set[tuple[str, ...]]) -> str | None:
    """Why an entry is unsafe, or None when it stays inside the destination."""
    if entry.kind == "special":
        return "is a device, FIFO or socket"
    parts = _parts(entry.name)
    if parts is None:
        return "has an absolute path"
    path = _walk([], parts, links)
    if path is None:
        return "would be written outside the destination (.. or through a link)"
    if entry.kind in ("symlink", "hardlink"):
        target = _parts(entry.link)
        if target is None:
            return f"is a link to the absolute path {entry.link!r}"
        # symlinks resolve from their own folder, tar hardlinks from the archive root
        start = path[:-1] if entry.kind == "symlink" else []
        if _walk(start, target, links) is None:
            return f"is a link pointing outside the destination ({entry.link!r})"
    return None


LINK_FIX = (
    "links are refused because extracting them would let the archive read or overwrite files outside "
    "the dataset folder; re-create the archive with the linked files copied in (`tar -h`, or `zip` without "
    "--symlinks)"
)
ZIP_LINK_FIX = (
    "symbolic links in zip files are refused: Python's zip extraction writes them as small text files "
    "holding the target path, not as links, so images would silently be wrong; re-create the archive "
    "with the linked files copied in (`zip` without --symlinks)"
)
UNSAFE_FIX = "the archive is unsafe or damaged; get it again from the original source"


def _check_entries(archive: Path, entries: list[_Entry], kind: str = "tar") -> None:
    """Raise ValueError naming the archive, the first unsafe entry and why, before anything is written."""
    link_parts = (_parts(e.name) for e in entries if e.kind in ("symlink", "hardlink"))
    links = {tuple(parts) for parts in link_parts if parts is not None}  # absolute ones are refused anyway
    for entry in entries:
        if kind == "zip" and entry.kind == "symlink":
            raise ValueError(f"{archive}: refusing to extract: entry {entry.name!r} is a symbolic link; {ZIP_LINK_FIX}")
        problem = _entry_problem(entry, links)
        if problem:
            fix = LINK_FIX if entry.kind in ("symlink", "hardlink") else UNSAFE_FIX
            raise ValueError(f"{archive}: refusing to extract: entry {entry.name!r} {problem}; {fix}")


def _owner_only(folder: Path) -> None:
    """Restrict an extracted tree to its owner (folders 0700, files 0600): patient images are not for every user."""
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o700 if path.is_dir() else 0o600)


def _archive_format(archive: Path) -> str:
    """'zip' or 'tar' by content; ValueError for anything else."""
    if zipfile.is_zipfile(archive):
        return "zip"
    if tarfile.is_tarfile(archive):
        return "tar"
    raise ValueError(f"{archive}: not a zip or tar archive; supported are .zip, .tar, .tar.gz, .tgz")


def is_archive(path: Path) -> bool:
    """True when `path` is a zip or tar file (by content)."""
    return Path(path).is_file() and (zipfile.is_zipfile(path) or tarfile.is_tarfile(path))


# ----------------------------------------------------------------------------- extraction


def _extracted_name(archive: Path) -> str:
    """Folder name for an archive's contents: its file name without the archive suffix."""
    name = archive.name
    for suffix in ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return f"{name}.extracted"


def _read_marker(folder: Path) -> str | None:
    """SHA-256 recorded by a previous extraction into `folder`, or None."""
    try:
        return json.loads((folder / MARKER).read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _extract_into(archive: Path, kind: str, folder: Path) -> None:
    """Extract a checked archive into an empty folder."""
    if kind == "zip":
        with zipfile.ZipFile(archive) as handle:
            handle.extractall(folder)
        return
    with tarfile.open(archive) as handle:
        # the 'data' filter (Python >= 3.11.4) re-checks every member at extraction time
        extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        handle.extractall(folder, **extra)


def safe_extract(archive: Path, dest: Path, sha256: str | None = None) -> Path:
    """Check every entry, then extract atomically to dest/<archive name without suffix>; return that folder."""
    archive, dest = Path(archive), Path(dest)
    kind = _archive_format(archive)
    entries = _zip_entries(archive) if kind == "zip" else _tar_entries(archive)
    _check_entries(archive, entries, kind)
    digest = _normalise_sha256(sha256) or sha256_file(archive)
    target = dest / _extracted_name(archive)
    if target.exists() or target.is_symlink():
        if _read_marker(target) == digest:
            log.info("%s already extracted to %s", archive, target)
            return target
        raise ValueError(
            f"{archive}: cannot extract to {target}: it already exists and was not extracted from this archive; "
            "delete it or choose another destination"
        )
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extracting-", dir=dest))
    log.info("extracting %s (%d entries) to %s", archive, len(entries), target)
    try:
        _extract_into(archive, kind, staging)
        (staging / MARKER).write_text(json.dumps({"archive": archive.name, "sha256": digest}) + "\n")
        _owner_only(staging)
        staging.rename(target)  # same filesystem: atomic, so readers never see a partial tree
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("extracted %s (%d entries) to %s", archive, len(entries), target)
    return target


# ----------------------------------------------------------------------------- fetching


def _download_name(url: str) -> str:
    """File name for a downloaded URL: the last path component, or 'download'."""
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    return name if name not in ("", ".", "..") else "download"


def _download(url: str, part: Path) -> str:
    """Stream `url` into `part` (logging progress in MiB) and return the SHA-256 of what was written."""
    from cxrmim.data.progress import Progress

    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=60) as response, part.open("wb") as out:  # noqa: S310 - scheme checked
        size = int(response.headers.get("Content-Length") or 0)
        meter = Progress(f"download {_download_name(url)} (MiB)", size // CHUNK)
        for chunk in iter(lambda: response.read(CHUNK), b""):
            digest.update(chunk)
            out.write(chunk)
            meter.step()
    return digest.hexdigest()


def _fetch_url(url: str, dest: Path, sha256: str) -> Path:
    """Download, verify and extract an archive URL into dest (skipped when already done)."""
    name = _download_name(url)
    archive = dest / name
    target = dest / _extracted_name(archive)
    if _read_marker(target) == sha256:
        log.info("%s already downloaded and extracted to %s", url, target)
        return target
    dest.mkdir(parents=True, exist_ok=True)
    if not (archive.is_file() and sha256_file(archive) == sha256):
        # Not resumable: a failed or corrupt download leaves nothing behind and the next run starts over.
        with atomic_path(archive) as part:
            log.info("downloading %s to %s", url, part)
            actual = _download(url, part)
            if actual != sha256:
                raise ValueError(
                    f"{url}: SHA-256 mismatch: expected {sha256}, got {actual}; the download is corrupt or the file "
                    "changed upstream: check the URL and dataset.sha256"
                )
    if not is_archive(archive):
        return archive  # e.g. a single CSV or image file: nothing to extract
    return safe_extract(archive, dest, sha256=sha256)


def _fetch_local(path: Path, dest: Path, sha256: str | None) -> Path:
    """Return a local folder or non-archive file as is; extract a local archive into dest."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: dataset.source not found; give an existing folder, archive, CSV or URL")
    if path.is_dir() or not is_archive(path):
        return path
    digest = sha256_file(path)
    if sha256 is not None and digest != sha256:
        raise ValueError(
            f"{path}: SHA-256 mismatch: expected {sha256}, got {digest}; check the file and dataset.sha256"
        )
    return safe_extract(path, dest, sha256=digest)


def fetch_source(source: str, dest: Path, sha256: str | None = None) -> Path:
    """Resolve dataset.source to a local path: folder/CSV as is, archives extracted into dest, URLs downloaded first."""
    dest = Path(dest)
    digest = _normalise_sha256(sha256)
    source = str(source).strip()
    if URL_PATTERN.match(source):
        if digest is None:
            raise ValueError(
                f"{source}: a URL source needs dataset.sha256 so the download can be verified; "
                "download the file once, run `sha256sum FILE` and put the digest in the config"
            )
        return _fetch_url(source, dest, digest)
    if "://" in source:
        raise ValueError(f"{source}: unsupported URL scheme; use http(s), ftp, file or a local path")
    return _fetch_local(Path(source).expanduser(), dest, digest)
