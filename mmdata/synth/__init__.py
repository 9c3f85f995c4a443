"""The synthetic factory: an inspection line's raw device logs, plus their ground truth.

``mmdata synth --out DIR --assets 3 --minutes 10 --seed 0`` writes, for each press
``press-1..N``, what the devices on an inspection line would write: camera frames (JPEG with
EXIF, or MP4), accelerometer files (Parquet/CSV), microphone WAVs and NTP logs, each device
on its own drifting clock; plus the line's operator notes (EN/JA, with PII) and a
``ground_truth.json`` describing everything: clock models, sync events, faults, PII spans and
name-tag boxes. It is the embedded dataset the demo and the tests of later stages run on.

Modules: :mod:`~mmdata.synth.config` (config/summary models), :mod:`~mmdata.synth.clocks`
(clock draws, sync and fault schedules, NTP logs), :mod:`~mmdata.synth.plan` (all random
decisions), :mod:`~mmdata.synth.signals` (vibration, audio), :mod:`~mmdata.synth.camera`
(frames), :mod:`~mmdata.synth.notes` (operator notes), :mod:`~mmdata.synth.jobs` (units of
work, sensor writers), :mod:`~mmdata.synth.factory` (orchestration, ground truth).

>>> import tempfile, pathlib
>>> out = pathlib.Path(tempfile.mkdtemp()) / "factory"
>>> summary = generate_factory(SynthConfig(assets=1, minutes=0.1, workers=1), out)
>>> sorted(p.name for p in out.iterdir())
['README.md', 'ground_truth.json', 'notes', 'press-1']
"""

from mmdata.synth.config import SynthConfig, SynthSummary
from mmdata.synth.factory import SCHEMA_VERSION, generate_factory
from mmdata.synth.notes import is_valid_my_number, my_number_check_digit

__all__ = [
    "SCHEMA_VERSION",
    "SynthConfig",
    "SynthSummary",
    "generate_factory",
    "is_valid_my_number",
    "my_number_check_digit",
]
