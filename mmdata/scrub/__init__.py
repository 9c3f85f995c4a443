"""PII scrubbing: text (EN + JA), images, audio, metadata — with an audit that holds no PII."""

from mmdata.scrub.findings import Finding
from mmdata.scrub.keys import keyed_hash, load_key, normalize, pseudonym

__all__ = ["Finding", "keyed_hash", "load_key", "normalize", "pseudonym"]
