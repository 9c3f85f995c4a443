"""Hostile-input safety for Label Studio exports: read them bounded, check every field.

An export is untrusted text: an annotator may have edited it by hand, or someone may hand
us a crafted file. mmdata never fetches any URL in it and never builds a file path from
its values; this module makes that a checked contract:

* **the file as a whole** (:func:`load_export`): refused *before reading* when it is larger
  than ``labels.max_export_bytes`` or not a regular file (a FIFO or ``/dev/zero`` would hang
  the reader); malformed JSON is an :class:`~mmdata.errors.InputDataError` quoting the line
  and column; numbers are parsed as :class:`~decimal.Decimal` from the JSON text so times
  map to nanoseconds without float drift; absurdly long integers, ``NaN`` and ``Infinity``
  parse to Decimals that the field checks then refuse item by item;
* **each item** (one task, annotation or result): the ``check_*`` functions raise
  :class:`Refused` with a reason that quotes the bad value; the mapping turns that into one
  rejection and carries on with the next item. Checked: nesting depth and list lengths,
  ids, record ids (a strict character set: ``../../etc/passwd``, absolute paths and NUL
  bytes never pass), label strings, numbers (finite, bounded), and media URLs.

**Media URLs** must refer to what ``labels push`` wrote: a ``data:image/...;base64,`` URI
(small frames are inlined), or a Label Studio local-files URL ``/data/local-files/?d=REL``
(relative, or absolute on the configured server's host) whose ``REL`` lands in
``RUN/labels/media/<record_id>/``. ``file:`` URLs, other hosts, other schemes, ``..``
components, absolute or backslashed paths are refused. The server's document root is not
known offline, so ``REL`` must be a tail of ``RUN/labels/media/<record_id>/<file>`` (some
ancestor of the media folder is the root); with ``document_root`` given it must resolve
exactly inside that folder.

>>> check_record_id("../../etc/passwd")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
mmdata.labels.safety.Refused: record_id '../../etc/passwd' is not a record id (letters, ...
"""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, urlsplit

from mmdata.errors import InputDataError

#: Deepest nesting of one task (Label Studio's own exports nest about 6 levels).
MAX_DEPTH = 32
#: Most annotations (or predictions) on one task, results in one annotation.
MAX_ANNOTATIONS = 1_000
MAX_RESULTS = 10_000
#: Longest label text, annotator name, timestamp string.
MAX_LABEL_CHARS = 200
MAX_NAME_CHARS = 256
MAX_STAMP_CHARS = 64
#: Integers with more digits than this parse as Decimal (and are refused where an id or a
#: time is expected) instead of tripping Python's int-parsing limit on the whole file.
_MAX_INT_DIGITS = 40

_RECORD_ID = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9._\-]{0,127}")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_INT_TEXT = re.compile(r"-?\d{1,20}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DATA_IMAGE = re.compile(r"data:image/(jpeg|png|webp);base64,", re.IGNORECASE)
_LOCAL_FILES = "/data/local-files/"


class Refused(InputDataError):
    """One item of an export is refused; the message is the reason (it quotes the value)."""


def quote(value: Any, limit: int = 80) -> str:
    """``repr`` of an untrusted value, shortened (control characters and NUL escaped).

    >>> quote("a\\x00b")
    "'a\\\\x00b'"
    """
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- the file ------------------------------------------------------------------------------


def _parse_int(text: str) -> int | Decimal:
    return int(text) if len(text.lstrip("-")) <= _MAX_INT_DIGITS else Decimal(text)


def parse_json(data: bytes | str, name: str) -> Any:
    """Parse export text: numbers as Decimal/int, errors as InputDataError with line/column.

    >>> parse_json(b'[{"t": 0.1}]', "x.json")
    [{'t': Decimal('0.1')}]
    >>> parse_json(b'[{"t": }]', "x.json")
    Traceback (most recent call last):
    ...
    mmdata.errors.InputDataError: x.json is not valid JSON: Expecting value at line 1, column 8
      fix: export the project again from Label Studio (JSON or JSON_MIN) and do not edit it by hand
    """
    hint = (
        "export the project again from Label Studio (JSON or JSON_MIN) and do not edit it by hand"
    )
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise InputDataError(
                f"{name} is not UTF-8 text (bad byte at offset {err.start})", hint=hint
            ) from None
    try:
        return json.loads(data, parse_float=Decimal, parse_int=_parse_int,
                          parse_constant=Decimal)  # fmt: skip
    except json.JSONDecodeError as err:
        raise InputDataError(
            f"{name} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}",
            hint=hint,
        ) from None
    except RecursionError:
        raise InputDataError(f"{name} nests arrays/objects absurdly deep", hint=hint) from None


def load_export(path: Path, max_bytes: int) -> Any:
    """Read and parse an export file, refusing it whole if it is too large or not a file.

    The size is checked before reading, and at most ``max_bytes + 1`` bytes are ever read
    (a file growing between the check and the read is caught too).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "e.json"
    >>> _ = p.write_text('[{"id": 1}]')
    >>> load_export(p, 1000)
    [{'id': 1}]
    >>> load_export(p, 5)
    Traceback (most recent call last):
    ...
    mmdata.errors.InputDataError: e.json is 11 bytes, over labels.max_export_bytes = 5
      fix: export fewer tasks at a time, or raise labels.max_export_bytes if the file is trusted
    """
    hint = "export fewer tasks at a time, or raise labels.max_export_bytes if the file is trusted"
    try:
        st = path.stat()
    except OSError as err:
        raise InputDataError(f"cannot read export {str(path)!r}: {err.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputDataError(f"export {str(path)!r} is not a regular file",
                             hint="pass the JSON file Label Studio exported")  # fmt: skip
    if st.st_size > max_bytes:
        raise InputDataError(
            f"{path.name} is {st.st_size} bytes, over labels.max_export_bytes = {max_bytes}",
            hint=hint,
        )
    with open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InputDataError(f"{path.name} grew past labels.max_export_bytes = {max_bytes} "
                             "while being read", hint=hint)  # fmt: skip
    return parse_json(data, path.name)


# -- items ---------------------------------------------------------------------------------


def check_depth(obj: Any, limit: int = MAX_DEPTH) -> None:
    """Refuse an item nested deeper than ``limit`` (iterative: no recursion to exhaust).

    >>> check_depth({"a": [[1]]}, 2)
    Traceback (most recent call last):
    ...
    mmdata.labels.safety.Refused: nested more than 2 levels deep
    """
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth >= limit:
                raise Refused(f"nested more than {limit} levels deep")
            children = node.values() if isinstance(node, dict) else node
            stack.extend((c, depth + 1) for c in children)


def check_record_id(value: Any) -> str:
    """A record id: a short string of ``[A-Za-z0-9._-]`` not starting with a dot.

    >>> check_record_id("0123abcd")
    '0123abcd'
    """
    if not isinstance(value, str) or not _RECORD_ID.fullmatch(value):
        raise Refused(f"record_id {quote(value)} is not a record id (letters, digits, '.', "
                      "'_', '-'; 1-128 characters, not starting with '.')")  # fmt: skip
    return value


def check_id(value: Any, what: str) -> int:
    """A Label Studio id: a non-negative JSON integer (not a bool, not a string).

    >>> check_id(7, "task id")
    7
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise Refused(f"{what} {quote(value)} is not an integer id")
    return value


def check_text(value: Any, what: str, limit: int = MAX_NAME_CHARS) -> str:
    """A short printable string (no control characters).

    >>> check_text("ann@example.com", "annotator")
    'ann@example.com'
    """
    if not isinstance(value, str) or not value or len(value) > limit or _CONTROL.search(value):
        raise Refused(f"{what} {quote(value)} is not a string of 1-{limit} printable characters")
    return value


def check_label(value: Any, name: str, allowed: Sequence[str], setting: str) -> str:
    """A label text that is in the configured label set of control ``name``.

    >>> check_label("anomaly", "anomaly", ["anomaly"], "labels.ranges")
    'anomaly'
    >>> check_label("fire", "anomaly", ["anomaly"], "labels.ranges")
    Traceback (most recent call last):
    ...
    mmdata.labels.safety.Refused: label 'fire' of 'anomaly' is not in labels.ranges ['anomaly']
    """
    try:
        text = check_text(value, "label", MAX_LABEL_CHARS)
    except Refused as err:
        raise Refused(f"{err} (control {name!r})") from None
    if text not in allowed:
        raise Refused(f"label {quote(text)} of {name!r} is not in {setting} {list(allowed)}")
    return text


def to_decimal(value: Any, what: str, bound: int) -> Decimal:
    """A finite number with ``|x| <= bound`` as an exact Decimal (floats via their repr,
    which is the JSON text they were parsed from).

    >>> to_decimal(0.1, "start", 10), to_decimal("2.5", "end", 10)
    (Decimal('0.1'), Decimal('2.5'))
    """
    if isinstance(value, bool):
        dec = None
    elif isinstance(value, Decimal | int):
        dec = Decimal(value)
    elif isinstance(value, float):
        dec = Decimal(repr(value))
    elif isinstance(value, str) and len(value) <= 64 and _NUMBER.fullmatch(value.strip()):
        dec = Decimal(value.strip())
    else:
        dec = None
    # exponent and digit checks first: 1e999999999 or 1e-999999999 must not reach arithmetic
    if (dec is None or not dec.is_finite() or len(dec.as_tuple().digits) > 64
            or int(dec.as_tuple().exponent) < -64 or dec.adjusted() > 18
            or dec.copy_abs() > bound):  # fmt: skip
        raise Refused(f"{what} {quote(value)} is not a number within ±{bound}")
    return dec


def int_field(value: Any, what: str) -> int:
    """An int64 given as a JSON integer or as a decimal string (``window_start_ns``...).

    >>> int_field("1700000000123456789", "window_start_ns")
    1700000000123456789
    """
    if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63:
        return value
    if isinstance(value, str) and _INT_TEXT.fullmatch(value) and -(2**63) <= int(value) < 2**63:
        return int(value)
    raise Refused(f"{what} {quote(value)} is not an integer")


# -- media ---------------------------------------------------------------------------------


class MediaPolicy:
    """Where a task's media may point: ``RUN/labels/media/<record_id>/`` on our server.

    >>> p = MediaPolicy(Path("/runs/r1"), "http://127.0.0.1:8080")
    >>> p.check("audio", "/data/local-files/?d=runs/r1/labels/media/abc/a.wav", "abc")
    >>> p.check("audio", "file:///etc/passwd", "abc")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mmdata.labels.safety.Refused: audio URL 'file:///etc/passwd' uses scheme 'file'; ...
    """

    def __init__(self, run_dir: Path, server_url: str, document_root: Path | None = None) -> None:
        # resolved, like the paths push made the URLs from (our own folders, not the export's)
        self.media = (Path(run_dir).resolve() / "labels" / "media").parts
        server = urlsplit(server_url)
        self.netloc = server.netloc.lower()
        self.root = None if document_root is None else Path(document_root).resolve().parts

    def check(self, key: str, value: Any, record_id: str) -> None:
        """Refuse ``value`` (the task's ``data[key]``) unless it refers to pushed media.
        ``None`` and ``""`` (push's "this window has no such media") pass."""
        if value is None or value == "":
            return
        if isinstance(value, dict) and key == "vibration":
            return  # inline series (valueType="json"): values, no URL
        if not isinstance(value, str):
            raise Refused(f"{key} is {type(value).__name__}, not a media URL")
        if _CONTROL.search(value):
            raise Refused(f"{key} URL {quote(value)} contains control characters")
        if value[:5].lower() == "data:":
            if key == "image" and _DATA_IMAGE.match(value):
                return
            raise Refused(f"{key} is a data URI {quote(value, 40)}; only inline JPEG/PNG/WebP "
                          "frames are accepted")  # fmt: skip
        try:
            url = urlsplit(value)
            url.port  # noqa: B018 - raises on a malformed port
        except ValueError as err:
            raise Refused(f"{key} URL {quote(value)} is malformed ({err})") from None
        if url.scheme or url.netloc:
            if url.scheme.lower() not in ("http", "https"):
                raise Refused(f"{key} URL {quote(value)} uses scheme {url.scheme!r}; only the "
                              "project's local-files URLs are accepted")  # fmt: skip
            if url.netloc.lower() != self.netloc:
                raise Refused(f"{key} URL {quote(value)} points to host {url.netloc!r}, not "
                              f"the Label Studio server {self.netloc!r}")  # fmt: skip
        if url.path != _LOCAL_FILES.rstrip("/") and url.path != _LOCAL_FILES:
            raise Refused(f"{key} URL {quote(value)} is not a local-files URL "
                          f"({_LOCAL_FILES}?d=...) of this project")  # fmt: skip
        ds = parse_qs(url.query, keep_blank_values=True).get("d", [])
        if len(ds) != 1:
            raise Refused(f"{key} URL {quote(value)} must carry exactly one d= path")
        self._check_rel(key, ds[0], record_id)

    def _check_rel(self, key: str, rel: str, record_id: str) -> None:
        parts = rel.split("/")
        if (rel.startswith("/") or "\\" in rel or "\x00" in rel
                or any(p in ("", ".", "..") or p.startswith("~") for p in parts)):  # fmt: skip
            raise Refused(f"{key} path {quote(rel)} is not a plain relative path (no '..', "
                          "no absolute path)")  # fmt: skip
        want = (*self.media, record_id)
        if self.root is not None:
            full = (*self.root, *PurePosixPath(rel).parts)
            if len(full) > len(want) and full[: len(want)] == want:
                return
        else:
            for k in range(len(self.media) + 1):
                tail = want[k:]
                if len(parts) > len(tail) and tuple(parts[: len(tail)]) == tail:
                    return
        raise Refused(f"{key} path {quote(rel)} is outside RUN/labels/media/{record_id}/ "
                      "(where push puts this window's media)")  # fmt: skip
