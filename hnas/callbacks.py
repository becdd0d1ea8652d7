"""Hydra callbacks (configured under `hydra.callbacks` in conf/config.yaml).

`SweepSummary` writes summary.csv and summary.md (mean and std per setting) into a sweep's folder when the
sweep ends. Hydra does not call `on_multirun_end` when a job failed, and passes it no job results, so the
summary is built from the result.json files the jobs wrote; `python run.py stage=report stage.kind=search
stage.inputs=[<sweep folder>]` (or hnas.reports.search_report.summarize_sweep) rebuilds it for a partly
failed sweep.
"""

import logging
from pathlib import Path

from hydra.experimental.callback import Callback

log = logging.getLogger(__name__)


class SweepSummary(Callback):
    def on_multirun_end(self, config, **kwargs):
        # Imported here: every run (not only sweeps) builds the callback, and reports pull in pandas.
        from hnas.reports.search_report import summarize_sweep, write_summary

        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            summary = summarize_sweep(sweep_dir)
            if summary.empty:
                log.info("sweep %s wrote no result.json (not a search sweep?): no summary", sweep_dir)
                return
            csv_path, md_path = write_summary(summary, sweep_dir)
            log.info("sweep summary of %d setting(s) written to %s and %s", len(summary), csv_path, md_path)
        except Exception:  # a summary failure must not turn a finished sweep into a failed one
            log.exception("could not write the summary of sweep %s", sweep_dir)
