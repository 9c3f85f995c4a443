"""A small, strict client for Label Studio's REST API (the calls ``labels push/pull`` need).

Why not ``label-studio-sdk``: the SDK 2.x (2.0.19 onwards, 2.1.2 included) requires
``opencv-python-headless<4.13``, and mmdata needs opencv 4.14 (its Haar cascades), so the
SDK cannot be installed beside mmdata. The SDK is a thin generated wrapper over the same
endpoints; this module calls them with the standard library (``urllib``), no new
dependency, and mirrors the SDK's behaviour where it matters:

* **credentials** (:func:`resolve_token`): from the environment variable
  ``labels.token_env`` or the file ``labels.token_file``; held in a :class:`Token` whose
  ``repr``/``str`` never show it; error messages have it masked. Two kinds, told apart the
  way the SDK does it (``label_studio_sdk.tokens.client_ext``): a **personal access token**
  is a JWT refresh token (``token_type == "refresh"`` with an ``exp`` claim): it is exchanged
  at ``POST /api/token/refresh/`` for a short-lived access token sent as ``Bearer``, which is
  refreshed shortly before it expires (or once after a 401); anything else is a **legacy
  token**, sent as ``Token <key>``. An expired personal access token is refused up front;
* **calls**: projects by title (create or get, update the labeling config), local-files
  import storage (create or get; never synced: mmdata imports the tasks itself), tasks
  (list, import, update, find by ``data.record_id``), predictions, annotations, exports
  (``JSON`` / ``JSON_MIN``; the download is capped at ``labels.max_export_bytes``).

Errors: a server that cannot be reached is a :class:`~mmdata.errors.DependencyError`; a
refused call a :class:`LabelStudioError` quoting the method, path, status and the server's
reason.

>>> t = Token("0123456789abcdef")
>>> t.kind, repr(t), str(t)
('legacy', 'Token(legacy, ***)', '***')
>>> LabelStudioClient("http://127.0.0.1:1", t).url
'http://127.0.0.1:1'
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from mmdata.config import LabelsConfig
from mmdata.errors import DependencyError, MmdataError, StageError

#: Seconds before an access token's expiry at which it is refreshed.
REFRESH_MARGIN_S = 30
#: Tasks per page when listing a project's tasks, and per import request.
PAGE_SIZE = 500
IMPORT_BATCH = 200
_JSON = "application/json"


class LabelStudioError(StageError):
    """Label Studio refused a call (the message quotes method, path, status and reason)."""

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None):
        self.status = status
        super().__init__(message, hint=hint)


class Token:
    """An API token that never shows itself: ``repr`` and ``str`` print ``***``.

    ``kind`` is ``"pat"`` for a personal access token (a JWT refresh token), ``"access"``
    for a JWT access token, ``"legacy"`` otherwise.

    >>> Token("abc123").kind
    'legacy'
    """

    __slots__ = ("_secret", "claims", "kind")

    def __init__(self, secret: str) -> None:
        secret = secret.strip()
        if len(secret) < 5 or any(c.isspace() for c in secret):
            raise MmdataError(
                "the Label Studio API token is empty, too short or contains whitespace",
                hint="copy the token from Label Studio's Account & Settings page",
            )
        self._secret = secret
        self.claims = _jwt_claims(secret)
        kind = self.claims.get("token_type") if self.claims is not None else None
        self.kind: Literal["legacy", "pat", "access"] = (
            "pat" if kind == "refresh" else "access" if kind == "access" else "legacy"
        )

    def reveal(self) -> str:
        """The secret itself (only to put it in an ``Authorization`` header)."""
        return self._secret

    def mask(self, text: str) -> str:
        """``text`` with the secret replaced by ``***`` (for error messages)."""
        return text.replace(self._secret, "***")

    def __repr__(self) -> str:
        return f"Token({self.kind}, ***)"

    def __str__(self) -> str:
        return "***"


def _jwt_claims(token: str) -> dict[str, Any] | None:
    """The claims of a JWT (not verified: the server does that), or None if not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (binascii.Error, ValueError):
        return None
    return claims if isinstance(claims, dict) and "exp" in claims else None


def resolve_token(config: LabelsConfig, environ: Mapping[str, str] | None = None) -> Token:
    """The API token: from the file ``config.token_file`` if set, else ``$config.token_env``.

    >>> cfg = LabelsConfig(token_env="MY_LS_TOKEN")
    >>> resolve_token(cfg, {"MY_LS_TOKEN": "0123456789"})
    Token(legacy, ***)
    >>> resolve_token(cfg, {})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mmdata.errors.DependencyError: no Label Studio API token: $MY_LS_TOKEN is not set
      fix: export MY_LS_TOKEN=<token> (...), or set labels.token_file
    """
    env = os.environ if environ is None else environ
    if config.token_file:
        path = Path(config.token_file).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise DependencyError(
                f"cannot read the Label Studio token file {str(path)!r}: {err.strerror}",
                hint="point labels.token_file at a readable file holding only the token",
            ) from None
        return Token(text)
    value = env.get(config.token_env, "")
    if not value.strip():
        raise DependencyError(
            f"no Label Studio API token: ${config.token_env} is not set",
            hint=f"export {config.token_env}=<token> (Label Studio: Account & Settings > "
            "Access Token), or set labels.token_file",
        )
    return Token(value)


class LabelStudioClient:
    """Calls to one Label Studio server with one token (see the module docstring).

    >>> c = LabelStudioClient("http://127.0.0.1:8080/", Token("0123456789"))
    >>> c.url, c._auth_header()
    ('http://127.0.0.1:8080', 'Token 0123456789')
    """

    def __init__(self, url: str, token: Token, *, timeout: float = 60.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise MmdataError(
                f"labels.url {url!r} is not an http(s) URL",
                hint="set labels.url to the server's address, e.g. http://127.0.0.1:8080",
            )
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._access: str | None = None
        self._access_exp = 0.0
        # Plain opener: no proxy for the server (a loopback server behind $http_proxy fails).
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        if token.kind == "pat" and float(token.claims["exp"]) < time.time():  # type: ignore[index]
            raise DependencyError(
                "the Label Studio personal access token has expired",
                hint="create a new one (Label Studio: Account & Settings > Personal Access Token)",
            )

    # -- plumbing ----------------------------------------------------------------------

    def _auth_header(self) -> str:
        if self.token.kind == "legacy":
            return f"Token {self.token.reveal()}"
        if self.token.kind == "access":
            return f"Bearer {self.token.reveal()}"
        if self._access is None or time.time() > self._access_exp - REFRESH_MARGIN_S:
            self._refresh()
        return f"Bearer {self._access}"

    def _refresh(self) -> None:
        body = {"refresh": self.token.reveal()}
        answer = self._send("POST", "/api/token/refresh/", body, auth=None)
        access = answer.get("access") if isinstance(answer, dict) else None
        if not isinstance(access, str):
            raise LabelStudioError("Label Studio's token refresh answered without an access token")
        claims = _jwt_claims(access) or {}
        self._access = access
        self._access_exp = float(claims.get("exp", time.time() + 60))

    def request(
        self, method: str, path: str, body: Any = None, *, params: Mapping[str, Any] | None = None
    ) -> Any:
        """One JSON call (``path`` starts with ``/api/``); the decoded answer (None if empty).

        A 401 with a personal access token refreshes the access token once and retries.
        """
        if params:
            path = f"{path}?{urllib.parse.urlencode(params)}"
        try:
            return self._send(method, path, body, auth=self._auth_header())
        except LabelStudioError as err:
            if err.status != 401 or self.token.kind != "pat":
                raise
        self._access = None
        return self._send(method, path, body, auth=self._auth_header())

    def _open(self, req: urllib.request.Request) -> Any:
        try:
            return self._opener.open(req, timeout=self.timeout)
        except urllib.error.HTTPError as err:
            raise self._refused(req, err) from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise DependencyError(
                f"Label Studio at {self.url} cannot be reached: {reason}",
                hint="start the server (label-studio start) or fix labels.url",
            ) from None

    def _send(self, method: str, path: str, body: Any, *, auth: str | None) -> Any:
        headers = {"Accept": _JSON}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = _JSON
        if auth is not None:
            headers["Authorization"] = auth
        # S310: self.url was checked to be http(s) in __init__.
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)  # noqa: S310
        with self._open(req) as resp:
            raw = resp.read()
        return json.loads(raw) if raw.strip() else None

    def _refused(
        self, req: urllib.request.Request, err: urllib.error.HTTPError
    ) -> LabelStudioError:
        try:
            detail: Any = json.loads(err.read(65_536) or b"null")
        except ValueError:
            detail = None
        reason = err.reason
        if isinstance(detail, dict):
            reason = detail.get("validation_errors") or detail.get("detail") or reason
        path = urllib.parse.urlsplit(req.full_url).path
        text = self.token.mask(f"Label Studio refused {req.get_method()} {path}: "
                               f"HTTP {err.code} {reason}")  # fmt: skip
        hint = None
        if err.code in (401, 403):
            hint = "check the API token (labels.token_env / labels.token_file) and its rights"
        return LabelStudioError(text[:2000], status=err.code, hint=hint)

    # -- users, projects, storage ------------------------------------------------------

    def whoami(self) -> dict[str, Any]:
        """The token's user (``id``, ``email``, ...); also proves the token works."""
        return dict(self.request("GET", "/api/current-user/whoami"))

    def projects(self) -> list[dict[str, Any]]:
        """Every project the token's user can see."""
        return list(self._pages("/api/projects/", {}, "results"))

    def project_by_title(self, title: str) -> dict[str, Any] | None:
        """The project with exactly this title (the lowest id if several), or None."""
        found = sorted((p for p in self.projects() if p.get("title") == title),
                       key=lambda p: int(p["id"]))  # fmt: skip
        return found[0] if found else None

    def ensure_project(self, title: str, label_config: str) -> tuple[dict[str, Any], str]:
        """Create the project, or update its labeling config; ``(project, "created"|...)``.

        The second item is ``"created"``, ``"updated"`` (config changed) or ``"unchanged"``.
        """
        project = self.project_by_title(title)
        if project is None:
            body = {"title": title, "label_config": label_config}
            return dict(self.request("POST", "/api/projects/", body)), "created"
        if project.get("label_config") == label_config:
            return project, "unchanged"
        pid = int(project["id"])
        body = {"label_config": label_config}
        return dict(self.request("PATCH", f"/api/projects/{pid}/", body)), "updated"

    def ensure_local_storage(self, project_id: int, path: Path, title: str) -> dict[str, Any]:
        """The project's local-files import storage for ``path`` (created if missing).

        It makes the server serve ``/data/local-files/?d=...`` under ``path`` to the
        project's users. It is never synced (that would add a task per file).
        """
        listed = self.request("GET", "/api/storages/localfiles/", params={"project": project_id})
        for s in listed or []:
            if Path(str(s.get("path", ""))) == path:
                return dict(s)
        body = {"project": project_id, "path": str(path), "title": title,
                "use_blob_urls": True, "regex_filter": ""}  # fmt: skip
        return dict(self.request("POST", "/api/storages/localfiles/", body))

    # -- tasks, predictions, annotations -----------------------------------------------

    def _pages(self, path: str, params: dict[str, Any], key: str) -> Iterator[dict[str, Any]]:
        page, seen = 1, 0
        while True:
            try:
                answer = self.request("GET", path, params={**params, "page": page,
                                                           "page_size": PAGE_SIZE})  # fmt: skip
            except LabelStudioError as err:
                if err.status == 404 and page > 1:  # "Invalid page": past the end
                    return
                raise
            items = answer if isinstance(answer, list) else answer.get(key) or []
            yield from items
            seen += len(items)
            total = answer.get("total", answer.get("count")) if isinstance(answer, dict) else None
            if not items or isinstance(answer, list) or (total is not None and seen >= total):
                return
            page += 1

    def tasks(self, project_id: int) -> list[dict[str, Any]]:
        """Every task of the project (``id``, ``data``, counts), in id order."""
        found = self._pages("/api/tasks/", {"project": project_id}, "tasks")
        return sorted(found, key=lambda t: int(t["id"]))

    def tasks_by_record(self, project_id: int) -> dict[str, dict[str, Any]]:
        """The project's tasks by ``data.record_id`` (the lowest task id wins a duplicate)."""
        out: dict[str, dict[str, Any]] = {}
        for t in self.tasks(project_id):
            rid = (t.get("data") or {}).get("record_id")
            if isinstance(rid, str):
                out.setdefault(rid, t)
        return out

    def import_tasks(self, project_id: int, tasks: Sequence[Mapping[str, Any]]) -> list[int]:
        """Import tasks (``{"data": ..., "predictions": [...]}``); their new ids, in order."""
        ids: list[int] = []
        for i in range(0, len(tasks), IMPORT_BATCH):
            batch = list(tasks[i : i + IMPORT_BATCH])
            answer = self.request("POST", f"/api/projects/{project_id}/import", batch,
                                  params={"return_task_ids": "true"})  # fmt: skip
            got = [int(x) for x in (answer or {}).get("task_ids", [])]
            if len(got) != len(batch):
                raise LabelStudioError(
                    f"Label Studio imported {len(got)} of {len(batch)} tasks into project "
                    f"{project_id}"
                )
            ids += got
        return ids

    def update_task(self, task_id: int, data: Mapping[str, Any]) -> dict[str, Any]:
        """Replace a task's ``data``."""
        return dict(self.request("PATCH", f"/api/tasks/{task_id}/", {"data": dict(data)}))

    def predictions(self, task_id: int) -> list[dict[str, Any]]:
        """The task's predictions (pre-annotations)."""
        return list(self.request("GET", "/api/predictions/", params={"task": task_id}) or [])

    def create_prediction(
        self, task_id: int, result: list[dict[str, Any]], *, model_version: str,
        score: float | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Attach a prediction (shown to annotators as a pre-annotation, not as a label)."""
        body: dict[str, Any] = {"task": task_id, "result": result, "model_version": model_version}
        if score is not None:
            body["score"] = score
        return dict(self.request("POST", "/api/predictions/", body))

    def delete_prediction(self, prediction_id: int) -> None:
        """Remove one prediction."""
        self.request("DELETE", f"/api/predictions/{prediction_id}/")

    def create_annotation(self, task_id: int, result: list[dict[str, Any]], *,
                          lead_time: float | None = None) -> dict[str, Any]:  # fmt: skip
        """Annotate a task as the token's user (what an annotator's *Submit* does)."""
        body: dict[str, Any] = {"result": result}
        if lead_time is not None:
            body["lead_time"] = lead_time
        return dict(self.request("POST", f"/api/tasks/{task_id}/annotations/", body))

    # -- export ------------------------------------------------------------------------

    def export(self, project_id: int, export_type: str = "JSON", *,
               max_bytes: int = 200_000_000) -> bytes:  # fmt: skip
        """The project's export (all tasks) as bytes; larger than ``max_bytes`` is refused."""
        if export_type not in ("JSON", "JSON_MIN"):
            raise MmdataError(f"export type {export_type!r} is not supported; use JSON or JSON_MIN")
        query = urllib.parse.urlencode({"exportType": export_type, "download_all_tasks": "true"})
        req = urllib.request.Request(  # noqa: S310 - http(s) only, checked in __init__
            f"{self.url}/api/projects/{project_id}/export?{query}",
            headers={"Authorization": self._auth_header(), "Accept": _JSON},
        )
        with self._open(req) as resp:
            data = resp.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise LabelStudioError(
                f"the export of project {project_id} is larger than labels.max_export_bytes "
                f"({max_bytes} bytes)",
                hint="raise labels.max_export_bytes, or export fewer tasks",
            )
        return bytes(data)


def connect(config: LabelsConfig, environ: Mapping[str, str] | None = None) -> LabelStudioClient:
    """A client for ``config.url`` with the configured token, checked with ``whoami``.

    >>> connect(LabelsConfig(url="http://127.0.0.1:9"), {"LABEL_STUDIO_API_KEY": "0123456789"})
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mmdata.errors.DependencyError: Label Studio at http://127.0.0.1:9 cannot be reached: ...
      fix: start the server (label-studio start) or fix labels.url
    """
    client = LabelStudioClient(config.url, resolve_token(config, environ))
    client.whoami()
    return client
