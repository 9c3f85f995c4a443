"""The pseudonymization key: from an environment variable or a key file, never logged.

Pseudonyms and the audit's hashes of originals are HMAC-SHA256 over *normalized* text
(Unicode NFKC, case-folded, whitespace collapsed), so "John  Smith" and "john smith" give
the same token in every note and every run with the same key.

>>> key = b"k" * 32
>>> keyed_hash(key, "John  Smith") == keyed_hash(key, "john smith")
True
>>> pseudonym(key, "PERSON", "John Smith")  # doctest: +ELLIPSIS
'<PERSON_...>'
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import unicodedata
from pathlib import Path

from mmdata.errors import ConfigError, DependencyError

_SPACE = re.compile(r"\s+")
MIN_KEY_BYTES = 16


def normalize(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed: the form that is hashed."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def keyed_hash(key: bytes, text: str) -> str:
    """HMAC-SHA256 (hex) of the normalized text: safe to store, useless without the key."""
    return hmac.new(key, normalize(text).encode("utf-8"), hashlib.sha256).hexdigest()


def pseudonym(key: bytes, entity: str, text: str, length: int = 10) -> str:
    """A stable token for ``text``: ``<ENTITY_xxxxxxxxxx>`` (same key, same token)."""
    return f"<{entity}_{keyed_hash(key, text)[:length]}>"


def load_key(env: str = "MMDATA_PII_KEY", key_file: str | None = None) -> bytes:
    """The secret key from ``key_file`` (if given) or the environment variable ``env``.

    Raises :class:`DependencyError` when no key is configured (the message names where to
    put one, never a value) and :class:`ConfigError` when it is too short.
    """
    if key_file is not None:
        path = Path(key_file)
        try:
            raw = path.read_bytes().strip()
        except OSError as err:
            raise DependencyError(
                f"cannot read the PII key file {str(path)!r}: {err.strerror}",
                hint="create it (e.g. `head -c 32 /dev/urandom | base64 > key`) and chmod 600",
            ) from None
        source = f"key file {str(path)!r}"
    else:
        value = os.environ.get(env)
        if not value:
            raise DependencyError(
                f"no PII key: the environment variable {env} is not set",
                hint=f"export {env}=<a long random secret>, or set scrub.key_file",
            )
        raw = value.encode("utf-8")
        source = f"environment variable {env}"
    if len(raw) < MIN_KEY_BYTES:
        raise ConfigError(source, "key", f"<{len(raw)} bytes, not shown>",
                          f"at least {MIN_KEY_BYTES} bytes of secret")  # fmt: skip
    return raw
