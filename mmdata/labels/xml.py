"""The Label Studio labeling config, generated from the modalities present and the label set.

One screen per window: the camera frame with rectangles, the vibration channels as one
multichannel time series with range labels, the audio with region labels, and the window's
defect class. Only the modalities some record has are shown. The names are a contract with
the mapping back onto records (``mmdata.labels.mapping``):

=================  =====================  ========================================
object (data key)  control                labels
=================  =====================  ========================================
``image``          ``box`` RectangleLabels  ``labels.boxes``
``vibration``      ``anomaly`` TimeSeriesLabels  ``labels.ranges``
``audio``          ``audio_region`` Labels  ``labels.ranges``
(the window)       ``defect`` Choices     ``labels.choices`` (single choice)
=================  =====================  ========================================

The vibration series is a CSV served by Label Studio (``valueType="url"``) whose time
column ``t`` holds seconds from the window start, so ranges come back in those units.

>>> xml = label_config(LabelsConfig(), Modalities(image=True, channels=("accel__ax",)))
>>> print(xml)  # doctest: +ELLIPSIS
<View>
  <Header value="$asset_id"/>
  <Image name="image" value="$image" zoom="true" zoomControl="true"/>
  <RectangleLabels name="box" toName="image">
    <Label value="defect"/>
  </RectangleLabels>
  <TimeSeries name="vibration" value="$vibration" valueType="url" timeColumn="t" sep=",">
    <Channel column="accel__ax" legend="accel ax"/>
  </TimeSeries>
  <TimeSeriesLabels name="anomaly" toName="vibration">
    <Label value="anomaly"/>
  </TimeSeriesLabels>
  <Choices name="defect" toName="image" choice="single" showInline="true">
    <Choice value="normal"/>
    ...
  </Choices>
</View>
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

from mmdata.config import LabelsConfig
from mmdata.errors import UsageError

#: Object tag names (and task data keys) and control tag names.
IMAGE, VIBRATION, AUDIO = "image", "vibration", "audio"
DEFECT, ANOMALY, AUDIO_REGION, BOX = "defect", "anomaly", "audio_region", "box"
TIME_COLUMN = "t"
_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


@dataclass(frozen=True)
class Modalities:
    """What the pushed records hold: a frame, these vibration columns, audio."""

    image: bool = False
    channels: tuple[str, ...] = ()
    audio: bool = False

    @property
    def objects(self) -> list[str]:
        """Object tag names present, in screen order."""
        return [n for n, on in ((IMAGE, self.image), (VIBRATION, bool(self.channels)),
                                (AUDIO, self.audio)) if on]  # fmt: skip


def column_name(*parts: str) -> str:
    """A CSV column / Channel name from stream and channel names (``[A-Za-z0-9_]`` only).

    >>> column_name("accel", "ax"), column_name("press-1.acc", "x/y")
    ('accel__ax', 'press_1_acc__x_y')
    """
    name = "__".join(re.sub(r"[^A-Za-z0-9_]", "_", p) for p in parts)
    return name if name[:1].isalpha() or name[:1] == "_" else f"c_{name}"


def _labels(tag: str, name: str, to: str, values: Sequence[str]) -> list[str]:
    if not values:  # an empty label set: no control (Label Studio refuses an empty one)
        return []
    out = [f"  <{tag} name={quoteattr(name)} toName={quoteattr(to)}>"]
    out += [f"    <Label value={quoteattr(v)}/>" for v in values]
    return [*out, f"  </{tag}>"]


def label_config(config: LabelsConfig, modalities: Modalities) -> str:
    """The ``<View>`` XML for these modalities and ``config``'s label sets (deterministic).

    >>> label_config(LabelsConfig(), Modalities())
    Traceback (most recent call last):
    ...
    mmdata.errors.UsageError: the records hold no frame, sensor or audio: nothing to label
    """
    objects = modalities.objects
    if not objects:
        raise UsageError("the records hold no frame, sensor or audio: nothing to label")
    for col in modalities.channels:
        if not _COLUMN.fullmatch(col) or col == TIME_COLUMN:
            raise UsageError(f"vibration column {col!r} is not a plain identifier")
    lines = ["<View>", '  <Header value="$asset_id"/>']
    if modalities.image:
        lines.append(f'  <Image name="{IMAGE}" value="${IMAGE}" zoom="true" zoomControl="true"/>')
        lines += _labels("RectangleLabels", BOX, IMAGE, config.boxes)
    if modalities.channels:
        lines.append(f'  <TimeSeries name="{VIBRATION}" value="${VIBRATION}" valueType="url" '
                     f'timeColumn="{TIME_COLUMN}" sep=",">')  # fmt: skip
        for col in modalities.channels:
            legend = col.replace("__", " ")
            lines.append(f"    <Channel column={quoteattr(col)} legend={quoteattr(legend)}/>")
        lines.append("  </TimeSeries>")
        lines += _labels("TimeSeriesLabels", ANOMALY, VIBRATION, config.ranges)
    if modalities.audio:
        lines.append(f'  <Audio name="{AUDIO}" value="${AUDIO}"/>')
        lines += _labels("Labels", AUDIO_REGION, AUDIO, config.ranges)
    lines.append(f'  <Choices name="{DEFECT}" toName="{objects[0]}" choice="single" '
                 'showInline="true">')  # fmt: skip
    lines += [f"    <Choice value={quoteattr(c)}/>" for c in config.choices]
    lines += ["  </Choices>", "</View>"]
    xml = "\n".join(lines)
    ET.fromstring(xml)  # noqa: S314 - our own text: well-formed whatever the label texts are
    return xml
