"""Datasets uploaded for refinement: limits, type sniffing, validation, storage.

An upload is streamed to ``<data_dir>/uploads/<random hex>.<csv|parquet>`` (a name the
service makes up; nothing from the request reaches the file system) while its size is
counted and hashed, so an oversized body is refused without being kept. Its type comes
from its bytes, not its name or content type: Parquet starts and ends with ``PAR1``;
anything else must be UTF-8 text without NUL bytes to be read as CSV (the delimiter is
sniffed among ``, ; tab |``).

Every check that can be made before queueing is made in the request, so a bad file gets
a clear 4xx at once instead of a failed job later:

* 413: more bytes than ``max_upload_bytes``, more rows than ``max_upload_rows``;
* 415: neither CSV nor Parquet (a spreadsheet, an archive, binary data);
* 422: a file that cannot be parsed or is empty, no such target column, no feature
  column, a constant target, fewer than ``min_upload_rows`` rows with a target, a
  class with a single row, or a ``task`` that does not fit the target.

The file is removed when its job ends (by the job's worker, or by the job runner when
the worker died); :func:`sweep_orphans` removes what a crash left behind.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from fastapi import HTTPException, status
from starlette.datastructures import UploadFile

from hyperprior.service.settings import Settings
from hyperprior.training.metafeatures import infer_task

__all__ = [
    "CHUNK_BYTES",
    "FileKind",
    "StoredUpload",
    "TargetInfo",
    "check_target",
    "describe_upload",
    "infer_task",
    "read_frame",
    "read_upload",
    "remove_upload",
    "save_upload",
    "sniff",
    "split_target",
    "sweep_orphans",
    "upload_path",
    "uploads_dir",
]

log = logging.getLogger(__name__)

FileKind = Literal["csv", "parquet"]
CHUNK_BYTES = 1024 * 1024
_NAME = re.compile(r"^[0-9a-f]{32}\.(csv|parquet)$")
_PARQUET_MAGIC = b"PAR1"
# Magic numbers of formats people upload by mistake, to say what was sent.
_KNOWN_BINARY = {
    b"PK\x03\x04": "a ZIP archive (an .xlsx workbook is one): export the sheet as CSV",
    b"\x1f\x8b": "gzip-compressed data: upload the uncompressed CSV",
    b"\xd0\xcf\x11\xe0": "an old Excel/Office file: export the sheet as CSV",
    b"%PDF": "a PDF document",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
}


def _error(code: int, loc: list[str | int], msg: str, kind: str = "value_error") -> HTTPException:
    if code == status.HTTP_422_UNPROCESSABLE_CONTENT:
        return HTTPException(code, detail=[{"loc": loc, "msg": msg, "type": kind}])
    return HTTPException(code, detail=msg)


# ------------------------------------------------------------------ storage


def uploads_dir(settings: Settings) -> Path:
    """The directory of uploaded files (created on first use)."""
    path = Path(settings.data_dir) / "uploads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def upload_path(settings: Settings, name: str) -> Path:
    """The path of a stored upload; refuses anything but a name this module made."""
    if not _NAME.match(name):
        raise ValueError(f"not an upload name: {name!r}")
    return uploads_dir(settings) / name


def remove_upload(settings: Settings, name: str | None) -> bool:
    """Delete a stored upload; True if there was one."""
    if not name:
        return False
    try:
        upload_path(settings, name).unlink()
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as exc:
        log.warning("cannot remove upload %s: %s", name, exc)
        return False
    return True


def sweep_orphans(settings: Settings, keep: Iterable[str], *, older_than_s: float = 600.0) -> int:
    """Remove uploads no active job refers to (left behind by a crash).

    Args:
        settings: Where the uploads are.
        keep: Names referred to by queued or running jobs.
        older_than_s: Spare younger files: a request may be between saving its file and
            creating its job.

    Returns:
        How many files were removed.
    """
    directory = Path(settings.data_dir) / "uploads"
    if not directory.is_dir():
        return 0
    keep = set(keep)
    now = time.time()
    removed = 0
    for path in directory.iterdir():
        if path.name in keep or not (_NAME.match(path.name) or path.suffix == ".part"):
            continue
        try:
            if now - path.stat().st_mtime < older_than_s:
                continue
            path.unlink()
            removed += 1
        except OSError:
            continue
    if removed:
        log.info("removed %d orphaned upload(s) from %s", removed, directory)
    return removed


@dataclass(frozen=True)
class StoredUpload:
    """An upload saved under the data directory.

    Attributes:
        name: The generated file name (``<hex>.csv`` or ``<hex>.parquet``).
        kind: ``csv`` or ``parquet``, from the content.
        size: Bytes.
        sha256: Of the content; names the dataset in the history when the client
            gives no name.
    """

    name: str
    kind: FileKind
    size: int
    sha256: str


def sniff(head: bytes, tail: bytes) -> FileKind | str:
    """``csv`` or ``parquet`` from a file's first and last bytes, else why not."""
    if head.startswith(_PARQUET_MAGIC) and tail.endswith(_PARQUET_MAGIC):
        return "parquet"
    for magic, what in _KNOWN_BINARY.items():
        if head.startswith(magic):
            return what
    if b"\x00" in head:
        return "binary data"
    sample = head.removeprefix(b"\xef\xbb\xbf")
    try:
        # The sample may end inside a multi-byte character.
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(sample) - 3:
            return "not UTF-8 text"
    return "csv"


async def save_upload(upload: UploadFile, settings: Settings) -> StoredUpload:
    """Stream an upload into the data directory under a generated name.

    Raises:
        HTTPException: 413 over ``max_upload_bytes``, 415 neither CSV nor Parquet,
            422 an empty file.
    """
    directory = uploads_dir(settings)
    stem = secrets.token_hex(16)
    part = directory / f"{stem}.part"
    digest = hashlib.sha256()
    size = 0
    head = b""
    tail = b""
    limit = settings.max_upload_bytes
    try:
        with part.open("wb") as out:
            while chunk := await upload.read(CHUNK_BYTES):
                size += len(chunk)
                if size > limit:
                    raise _error(
                        status.HTTP_413_CONTENT_TOO_LARGE,
                        ["body", "file"],
                        f"the file is larger than the limit of {limit} bytes "
                        "(HYPERPRIOR_MAX_UPLOAD_BYTES): sample it, or refine locally with "
                        "`hyperprior suggest DATA --refine` (the data never leaves your machine)",
                    )
                if len(head) < 4096:
                    head += chunk[: 4096 - len(head)]
                tail = (tail + chunk)[-4:]
                digest.update(chunk)
                out.write(chunk)
        if size == 0:
            raise _error(
                status.HTTP_422_UNPROCESSABLE_CONTENT, ["body", "file"], "the file is empty"
            )
        kind = sniff(head, tail)
        if kind not in ("csv", "parquet"):
            raise _error(
                status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                ["body", "file"],
                f"the file is {kind}; expected a CSV (UTF-8 text) or a Parquet file",
            )
        name = f"{stem}.{kind}"
        os.replace(part, directory / name)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return StoredUpload(name=name, kind=kind, size=size, sha256=digest.hexdigest())  # type: ignore[arg-type]


# ------------------------------------------------------------------ reading


def _delimiter(path: Path) -> str:
    with path.open("rb") as handle:
        sample = handle.read(64 * 1024).decode("utf-8", errors="ignore")
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def read_frame(path: Path, kind: FileKind, *, max_rows: int | None = None) -> pd.DataFrame:
    """Read a stored upload.

    Args:
        path: The file.
        kind: ``csv`` or ``parquet``.
        max_rows: Read at most this many rows plus one (enough to tell it is too many).

    Raises:
        ValueError: the file cannot be parsed (the message says why).
    """
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            parquet = pq.ParquetFile(path)
            if max_rows is not None and parquet.metadata.num_rows > max_rows:
                # Only the count matters: do not decode the whole file.
                return pd.DataFrame(index=pd.RangeIndex(parquet.metadata.num_rows))
            return parquet.read().to_pandas()
        nrows = None if max_rows is None else max_rows + 1
        return pd.read_csv(
            path,
            sep=_delimiter(path),
            nrows=nrows,
            encoding="utf-8-sig",
            low_memory=False,
        )
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise ValueError(f"cannot read the {kind.upper()} file: {_first_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow raises its own zoo of errors
        raise ValueError(f"cannot read the {kind.upper()} file: {_first_line(exc)}") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]


# ------------------------------------------------------------------ the target


@dataclass(frozen=True)
class TargetInfo:
    """What the checks found out about an upload."""

    task: str
    n_rows: int
    n_features: int
    n_classes: int | None


def task_mismatch(y: pd.Series, task: str) -> str | None:
    """Why a target (without missing values) does not fit ``task``, or ``None``."""
    n_unique = int(y.nunique())
    numeric = pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y)
    if task == "regression":
        if not numeric:
            return "task 'regression' needs a numeric target, this one holds text labels"
        return None
    if task == "binary" and n_unique != 2:
        hint = "multiclass" if n_unique <= 20 or not numeric else "regression"
        return f"task 'binary' needs exactly 2 classes, the target has {n_unique}: use {hint!r}"
    if task == "multiclass":
        if n_unique == 2:
            return "the target has 2 classes: use task 'binary'"
        if numeric and not bool((y == y.round()).all()):
            return (
                f"the target holds {n_unique} distinct non-integer numbers, not class "
                "labels: use task 'regression'"
            )
    return None


def _plain(value: Any) -> Any:
    """numpy scalars as Python values: messages say 1, not np.int64(1)."""
    return value.item() if hasattr(value, "item") else value


def check_target(
    frame: pd.DataFrame, target: str, task: str | None, settings: Settings
) -> TargetInfo:
    """Check that ``frame`` can be refined on with ``target``; infer the task.

    Raises:
        HTTPException: 413 for too many rows, 422 for everything else (see the module
            docstring), each naming the offending field.
    """
    unprocessable = status.HTTP_422_UNPROCESSABLE_CONTENT
    n_rows = len(frame)
    if n_rows > settings.max_upload_rows:
        raise _error(
            status.HTTP_413_CONTENT_TOO_LARGE,
            ["body", "file"],
            f"the file has more than {settings.max_upload_rows} rows, the limit "
            "(HYPERPRIOR_MAX_UPLOAD_ROWS): sample it, or refine locally with "
            "`hyperprior suggest DATA --refine`",
        )
    columns = [str(c) for c in frame.columns]
    if target not in columns:
        shown = ", ".join(repr(c) for c in columns[:20]) + (" ..." if len(columns) > 20 else "")
        raise _error(
            unprocessable,
            ["body", "target"],
            f"no column {target!r} in the file; its columns are {shown or 'none'}",
        )
    if columns.count(target) > 1:
        raise _error(unprocessable, ["body", "target"], f"the file has several {target!r} columns")
    if len(columns) < 2:
        raise _error(unprocessable, ["body", "file"], "the file has no feature columns")
    y = frame.iloc[:, columns.index(target)]
    labelled = int(y.notna().sum())
    if labelled < settings.min_upload_rows:
        raise _error(
            unprocessable,
            ["body", "file"],
            f"the file has {labelled} rows with a target, at least {settings.min_upload_rows} "
            "are needed to compare configs by cross-validation",
        )
    y = y.dropna()
    n_unique = int(y.nunique())
    if n_unique < 2:
        raise _error(
            unprocessable,
            ["body", "target"],
            f"the target {target!r} is constant ({_plain(y.iloc[0])!r} in every row): nothing "
            "to learn",
        )
    if task is not None:
        problem = task_mismatch(y, task)
        if problem is not None:
            raise _error(unprocessable, ["body", "task"], problem)
    task = task or infer_task(y)
    n_classes = None
    if task != "regression":
        counts = y.astype(str).value_counts()
        if int(counts.min()) < 2:
            raise _error(
                unprocessable,
                ["body", "file"],
                f"class {counts.idxmin()!r} has a single row; cross-validation needs at least "
                "2 rows of every class",
            )
        n_classes = int(len(counts))
    return TargetInfo(task=task, n_rows=n_rows, n_features=len(columns) - 1, n_classes=n_classes)


def split_target(frame: pd.DataFrame, target: str) -> tuple[pd.DataFrame, pd.Series]:
    """Features and target of a checked frame."""
    position = [str(c) for c in frame.columns].index(target)
    y = frame.iloc[:, position]
    X = frame.drop(columns=frame.columns[position])
    return X, y


def describe_upload(stored: StoredUpload, info: TargetInfo, target: str) -> dict[str, Any]:
    """The job request's description of an uploaded dataset (JSON-ready)."""
    return {
        "kind": "upload",
        "file": stored.name,
        "format": stored.kind,
        "bytes": stored.size,
        "sha256": stored.sha256,
        "target": target,
        "rows": info.n_rows,
        "features": info.n_features,
    }


def read_upload(settings: Settings, source: dict[str, Any]) -> tuple[pd.DataFrame, pd.Series]:
    """Features and target of a stored upload described by :func:`describe_upload`."""
    frame = read_frame(upload_path(settings, source["file"]), source["format"])
    return split_target(frame, source["target"])
