"""The run report: ``mmdata report RUN`` → one self-contained HTML file.

* :mod:`mmdata.report.build` reads the run directory stage by stage (manifest, quarantine,
  streams, clock models, the records' windows, audit summary, dataset card, features,
  training metrics, evaluation and ablation); a stage that has not run becomes a
  "stage not run" note instead of an error;
* :mod:`mmdata.report.plots` draws inline SVG (timeline lanes, line and bar charts, heatmap);
  :mod:`mmdata.report.timeline` lays out one asset's streams and windows with it;
* :mod:`mmdata.report.markdown` renders the dataset card (a safe Markdown subset);
* :mod:`mmdata.report.sections` writes each section; :mod:`mmdata.report.page` assembles the
  page: :func:`mmdata.report.page.write_report`.

The report embeds no raw PII (counts, flags, timestamps, ids and metrics only: no notes,
frames, transcripts or model answers), loads nothing from outside the file, and is
byte-identical for the same run.
"""
