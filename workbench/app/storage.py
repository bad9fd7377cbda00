"""Where visitors' files go: uploads staged (and their images unpacked safely) under a runs folder, with quotas;
hosted visitors' folders trimmed by age and size, never one with a run still being written."""

from __future__ import annotations

import hashlib
import re
import shutil
import threading
import time
import zipfile
from pathlib import Path

from ..core.records import DatasetError
from ..core.runlock import RunLock
from ..core.runs import STAGING
from .hosting import UPLOADS_QUOTA_BYTES, VISITOR_IDLE_SECONDS, VISITORS_QUOTA_BYTES

MAX_UPLOAD_BYTES = 50 * 1024 * 1024  # a dataset file or an images zip (uncompressed total for the zip)
MAX_ZIP_FILES = 5_000  # images in one zip (MM-SafetyBench has 1,680)
MAX_ZIP_RATIO = 50  # unpacked / compressed bytes of one zip: images barely compress; a higher ratio is a zip bomb
UPLOAD_FILES_QUOTA = 20_000  # files kept in staged uploads (per visitor when hosted): the quota counts files too
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff")
VISITOR_ACTIVE_SECONDS = 600  # a folder used this recently is never removed for the quota (its visitor is here)
VISITORS = "visitors"  # hosting mode: runs/visitors/<hash of a browser session>/ holds that visitor's runs and uploads


def stage_upload(root: Path, upload: str, images_zip: str | None) -> Path:
    """Copy the upload (and unpack its images) into <root>/uploads/<hash>/, refusing unsafe archives."""
    source = Path(upload)
    if source.suffix.lower() not in (".jsonl", ".json", ".csv"):
        raise DatasetError(f"{source.name}: upload a .jsonl or .csv dataset")
    if source.stat().st_size > MAX_UPLOAD_BYTES:
        raise DatasetError(f"{source.name} is over {MAX_UPLOAD_BYTES // 2**20} MB; upload a smaller dataset")
    name = upload_name(source)
    digest = hashlib.sha256(name.encode() + b"\0" + source.read_bytes() +
                            (Path(images_zip).read_bytes() if images_zip else b""))
    folder = root / "uploads" / digest.hexdigest()[:16]
    target = folder / name
    if target.exists():
        return target
    trim_uploads(root)
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if images_zip:
            _safe_unzip(Path(images_zip), staging)
        shutil.copyfile(source, staging / target.name)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target

def upload_name(source: Path) -> str:
    """The visitor's own file name, kept so that it shows wherever the upload is named (the Stage I box, run
    pickers): letters, digits, '.', '_' and '-' only (anything else becomes '_'), at most 60 characters."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", source.stem).strip("._")[:60] or "dataset"
    return stem + source.suffix.lower()


def trim_uploads(root: Path) -> None:
    """Keep staged uploads under the quota: the oldest go first (a run keeps its own records' label, so a
    removed upload only means re-uploading to reopen it)."""
    uploads = root / "uploads"
    if not uploads.is_dir():
        return
    folders = sorted((p for p in uploads.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    usage = {p: _folder_usage(p) for p in folders}
    total, files = sum(u[0] for u in usage.values()), sum(u[1] for u in usage.values())
    for folder in folders:  # room for one more upload and its zip, in bytes and in files
        if total <= UPLOADS_QUOTA_BYTES - MAX_UPLOAD_BYTES * 5 and files <= UPLOAD_FILES_QUOTA - MAX_ZIP_FILES:
            break
        shutil.rmtree(folder, ignore_errors=True)
        total, files = total - usage[folder][0], files - usage[folder][1]


def _folder_bytes(folder: Path) -> int:
    return _folder_usage(folder)[0]


def _folder_usage(folder: Path) -> tuple[int, int]:
    """(bytes, files) under `folder`."""
    sizes = [f.stat().st_size for f in folder.rglob("*") if f.is_file()]
    return sum(sizes), len(sizes)


def visitors_full(root: Path) -> bool:
    """Whether hosted visitors' folders together are over VISITORS_QUOTA_BYTES even after trimming (every folder
    in use): then new uploads are refused rather than the bound exceeded."""
    return root.is_dir() and _folder_bytes(root) > VISITORS_QUOTA_BYTES


def _last_used(folder: Path) -> float:
    """The newest modification time in a visitor's folder (a run writing its metrics counts as use)."""
    return max([folder.stat().st_mtime, *(p.stat().st_mtime for p in folder.iterdir())])


def trim_visitor_folders(root: Path, now: float | None = None) -> list[Path]:
    """Remove hosted visitors' folders idle for a day, then the least recently used beyond the quota; a folder
    with a run still being written (a live lock) is kept. Returns what was removed."""
    if not root.is_dir():
        return []
    now = time.time() if now is None else now
    used = {p: _last_used(p) for p in root.iterdir() if p.is_dir()}  # each folder read once
    sizes = {p: _folder_bytes(p) for p in used}
    total = sum(sizes.values())
    removed = []
    for folder in sorted(used, key=lambda p: used[p]):
        staging = folder / STAGING
        runs = [*folder.iterdir(), *(staging.iterdir() if staging.is_dir() else [])]  # staged runs are written too
        busy = now - used[folder] < VISITOR_ACTIVE_SECONDS or any(
            run.is_dir() and RunLock(run).owner() is not None for run in runs)
        if not busy and (now - used[folder] > VISITOR_IDLE_SECONDS or total > VISITORS_QUOTA_BYTES):
            total -= sizes[folder]
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


GRADIO_CACHE_BYTES = 2 * 2**30  # hosted: Gradio's own cache of uploaded files, in all (it keeps each an hour)
GRADIO_CACHE_FILES = 10_000
GRADIO_CACHE_CHECK_SECONDS = 15


def trim_gradio_cache(folder: Path, max_bytes: int = GRADIO_CACHE_BYTES, max_files: int = GRADIO_CACHE_FILES
                      ) -> list[Path]:
    """Remove Gradio's oldest cached uploads beyond `max_bytes` or `max_files`: files are cached when sent, before
    any handler runs and with no job, so no per-visitor quota sees them. Returns what was removed."""
    if not folder.is_dir():
        return []
    files = []
    for path in folder.rglob("*"):
        try:
            if path.is_file():
                stat = path.stat()
                files.append((stat.st_mtime, stat.st_size, path))
        except OSError:  # removed meanwhile by Gradio's own hourly cleanup
            continue
    files.sort()
    total, count, removed = sum(size for _, size, _ in files), len(files), []
    for _, size, path in files:
        if total <= max_bytes and count <= max_files:
            break
        path.unlink(missing_ok=True)
        total, count = total - size, count - 1
        removed.append(path)
    return removed


def keep_gradio_cache_bounded(folder: Path, every: float = GRADIO_CACHE_CHECK_SECONDS) -> threading.Thread:
    """Hosted: trim Gradio's upload cache every `every` seconds, in a daemon thread, for as long as the app runs."""
    def loop() -> None:
        while True:
            trim_gradio_cache(folder)
            time.sleep(every)

    thread = threading.Thread(target=loop, name="gradio-cache-trim", daemon=True)
    thread.start()
    return thread


def _safe_unzip(archive: Path, target: Path) -> None:
    """Unpack images only (other entries and empty files are skipped), refusing absolute paths, `..`, links,
    oversize archives and archives that unpack to more than MAX_ZIP_RATIO times their size."""
    try:
        bundle = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise DatasetError(f"{archive.name} is not a zip archive; zip the image folder and upload that") from None
    with bundle:
        members = [m for m in bundle.infolist() if not m.is_dir()]
        unpacked = sum(m.file_size for m in members)
        if len(members) > MAX_ZIP_FILES or unpacked > MAX_UPLOAD_BYTES * 4:
            raise DatasetError(f"{archive.name} is too large (at most {MAX_ZIP_FILES} files and "
                               f"{MAX_UPLOAD_BYTES * 4 // 2**20} MB unpacked)")
        if unpacked > MAX_ZIP_RATIO * max(archive.stat().st_size, 1):
            raise DatasetError(f"{archive.name} unpacks to {unpacked // archive.stat().st_size}x its size (images "
                               f"compress far less; at most {MAX_ZIP_RATIO}x): zip the image files themselves")
        for member in members:
            name = Path(member.filename)
            if name.is_absolute() or ".." in name.parts or (member.external_attr >> 16) & 0o170000 == 0o120000:
                raise DatasetError(f"{archive.name}: unsafe entry {member.filename!r} (absolute, '..' or a link)")
            if name.suffix.lower() not in IMAGE_SUFFIXES or member.file_size == 0:
                continue  # not an image: nothing a record could use is lost, and no junk reaches the disk
            destination = target / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            with bundle.open(member) as handle:
                destination.write_bytes(handle.read())
