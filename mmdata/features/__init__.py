"""The feature cache: encoder outputs per medium, content-addressed, computed in batches.

>>> from mmdata.features import entry_key
>>> len(entry_key("0" * 64, "1" * 64))
64
"""

from mmdata.features.cache import FeatureCache, encoder_key, entry_key
from mmdata.features.encoders import build_encoder, resolve_device
from mmdata.features.stage import FeatureStore, load_features, run_features, summary_lines

__all__ = [
    "FeatureCache",
    "FeatureStore",
    "build_encoder",
    "encoder_key",
    "entry_key",
    "load_features",
    "resolve_device",
    "run_features",
    "summary_lines",
]
