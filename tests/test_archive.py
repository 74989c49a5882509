"""Tests for cxrmim.data.archive: refusing unsafe archives, atomic extraction and fetch_source."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from cxrmim.data import archive as archive_module
from cxrmim.data.archive import MARKER, fetch_source, safe_extract

# ----------------------------------------------------------------------------- helpers


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    """Write a zip file with the given entry names and contents (creating its folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as handle:
        for name, data in entries.items():
            handle.writestr(name, data)
    return path


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    """Write a tar.gz file from (TarInfo, data) pairs."""
    with tarfile.open(path, "w:gz") as handle:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            handle.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    """A tar member header of the given type."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


def _tree(folder: Path) -> set[str]:
    """Every path below folder, relative, as strings."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")} if folder.exists() else set()


def _sha(path: Path) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_refused(archive: Path, dest: Path, entry: str) -> None:
    """safe_extract must refuse, name archive and entry, and leave dest's tree as it was."""
    before, outside = _tree(dest), _tree(dest.parent)
    with pytest.raises(ValueError, match="refusing") as error:
        safe_extract(archive, dest)
    assert str(archive) in str(error.value) and entry in str(error.value)
    assert _tree(dest) == before
    assert _tree(dest.parent) == outside


# ----------------------------------------------------------------------------- unsafe archives


def test_zip_with_parent_entry_is_refused(tmp_path):
    archive = _zip(tmp_path / "evil.zip", {"ok.txt": b"fine", "../evil.txt": b"boom"})
    _assert_refused(archive, tmp_path / "dest", "../evil.txt")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "dest" / "ok.txt").exists()


def test_tar_with_absolute_path_is_refused(tmp_path):
    target = tmp_path / "abs_evil.txt"
    archive = _tar(tmp_path / "abs.tar.gz", [(_info("ok.txt"), b"fine"), (_info(str(target)), b"boom")])
    _assert_refused(archive, tmp_path / "dest", str(target).lstrip("/"))
    assert not target.exists()


@pytest.mark.parametrize(
    "members, entry",
    [
        ([(_info("link", tarfile.SYMTYPE, "../../outside"), b"")], "link"),
        ([(_info("link", tarfile.SYMTYPE, "/etc"), b"")], "link"),
        ([(_info("d/link", tarfile.SYMTYPE, "."), b""), (_info("d/link/../../x"), b"boom")], "d/link/../../x"),
        ([(_info("a", tarfile.SYMTYPE, "."), b""), (_info("b", tarfile.SYMTYPE, "a/.."), b"")], "b"),
        ([(_info("hard", tarfile.LNKTYPE, "../secret"), b"")], "hard"),
        ([(_info("dev", tarfile.CHRTYPE), b"")], "dev"),
        ([(_info("fifo", tarfile.FIFOTYPE), b"")], "fifo"),
    ],
    ids=["symlink-up", "symlink-absolute", "write-through-link", "link-chain", "hardlink", "device", "fifo"],
)
def test_tar_links_and_devices_are_refused(tmp_path, members, entry):
    archive = _tar(tmp_path / "evil.tgz", [(_info("ok.txt"), b"fine"), *members])
    _assert_refused(archive, tmp_path / "dest", entry)


def test_tar_with_inside_symlink_is_extracted(tmp_path):
    members = [(_info("pkg/readme.txt"), b"hello"), (_info("pkg/link.txt", tarfile.SYMTYPE, "readme.txt"), b"")]
    out = safe_extract(_tar(tmp_path / "pkg.tar.gz", members), tmp_path / "dest")
    assert (out / "pkg" / "link.txt").read_text() == "hello"


def test_not_an_archive(tmp_path):
    path = tmp_path / "data.zip"
    path.write_text("plain text")
    with pytest.raises(ValueError, match="not a zip or tar"):
        safe_extract(path, tmp_path / "dest")


# ----------------------------------------------------------------------------- extraction behaviour


def test_extract_is_idempotent_and_never_overwrites(tmp_path):
    archive = _zip(tmp_path / "data.zip", {"top/a.txt": b"a"})
    dest = tmp_path / "dest"
    out = safe_extract(archive, dest)
    assert out == dest / "data" and (out / "top" / "a.txt").read_bytes() == b"a"
    assert (out / MARKER).is_file() and _tree(dest) == {"data", "data/top", "data/top/a.txt", f"data/{MARKER}"}
    assert safe_extract(archive, dest) == out
    other = _zip(tmp_path / "other" / "data.zip", {"top/b.txt": b"b"})
    with pytest.raises(ValueError, match="already exists"):
        safe_extract(other, dest)
    assert not (out / "top" / "b.txt").exists()


def test_failed_extraction_leaves_nothing(tmp_path, monkeypatch):
    archive = _zip(tmp_path / "data.zip", {"a.txt": b"a"})

    def half_then_fail(archive, kind, folder):
        (folder / "partial.txt").write_text("half")
        raise OSError("disk full")

    monkeypatch.setattr(archive_module, "_extract_into", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        safe_extract(archive, tmp_path / "dest")
    assert _tree(tmp_path / "dest") == set()


# ----------------------------------------------------------------------------- fetch_source


def test_fetch_local_folder_and_csv_returned_as_is(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "x.png").write_bytes(b"x")
    csv_path = tmp_path / "manifest.csv"
    csv_path.write_text("image,label\n")
    dest = tmp_path / "dest"
    assert fetch_source(str(folder), dest) == folder
    assert fetch_source(str(csv_path), dest) == csv_path
    assert _tree(folder) == {"x.png"} and not dest.exists()


def test_fetch_local_archive(tmp_path):
    archive = _zip(tmp_path / "data.zip", {"a.txt": b"a"})
    out = fetch_source(str(archive), tmp_path / "dest")
    assert (out / "a.txt").read_bytes() == b"a" and archive.is_file()
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        fetch_source(str(archive), tmp_path / "dest2", sha256="0" * 64)


def test_fetch_url_requires_sha256(tmp_path):
    with pytest.raises(ValueError, match="needs dataset.sha256"):
        fetch_source("https://example.org/data.zip", tmp_path / "dest")
    with pytest.raises(ValueError, match="not a SHA-256"):
        fetch_source("https://example.org/data.zip", tmp_path / "dest", sha256="abc")


def test_fetch_file_url_wrong_checksum(tmp_path):
    archive = _zip(tmp_path / "src" / "data.zip", {"a.txt": b"a"})
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("user file")
    url = archive.as_uri()
    with pytest.raises(ValueError, match="SHA-256 mismatch") as error:
        fetch_source(url, dest, sha256="f" * 64)
    message = str(error.value)
    assert url in message and "f" * 64 in message and _sha(archive) in message
    assert _tree(dest) == {"keep.txt"} and archive.is_file()


def test_fetch_file_url_right_checksum_and_idempotent(tmp_path, monkeypatch):
    archive = _zip(tmp_path / "src" / "data.zip", {"top/a.txt": b"a"})
    dest = tmp_path / "dest"
    out = fetch_source(archive.as_uri(), dest, sha256=_sha(archive).upper())
    assert out == dest / "data" and (out / "top" / "a.txt").read_bytes() == b"a"
    assert (dest / "data.zip").is_file() and not (dest / "data.zip.part").exists()

    def no_network(url, part):
        raise AssertionError("downloaded again")

    monkeypatch.setattr(archive_module, "_download", no_network)
    assert fetch_source(archive.as_uri(), dest, sha256=_sha(archive)) == out
