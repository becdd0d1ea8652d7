"""Hydra callbacks (configured under `hydra.callbacks` in conf/config.yaml).

`SweepSummary` writes summary.csv and summary.md (mean and std per setting, and the jobs without a result:
where their log is and what it says went wrong) into a search sweep's folder after every job and when the
sweep ends. Hydra does not call `on_multirun_end` when a job failed, and passes it no job results, so the
summary is built from the result.json files the jobs wrote; `python run.py stage=report stage.kind=search
stage.inputs=[<sweep folder>]` (or hnas.reports.results.summarize_sweep) rebuilds it for a partly
failed sweep. Sweeps of other stages (precompute, report, train) write no result.json: they are left alone.
"""

import logging
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


class SweepSummary(Callback):
    def on_job_end(self, config, job_return, **kwargs):
        # Rebuilt after every job, from the files: a sweep whose jobs fail or are killed (Hydra then skips
        # on_multirun_end) still has a summary of what finished and a list of what did not.
        mode = OmegaConf.select(config, "hydra.mode")
        if getattr(mode, "name", mode) == "MULTIRUN":
            self._summarize(config)

    def on_multirun_end(self, config, **kwargs):
        self._summarize(config)

    @staticmethod
    def _summarize(config):
        sweep_dir = Path(config.hydra.sweep.dir)
        stage = OmegaConf.select(config, "stage.name")
        if stage != "search":
            # Only search jobs write result.json: summarising another stage would report every job as failed.
            log.debug("sweep %s is a stage=%s sweep, not a search sweep: no summary", sweep_dir, stage)
            return
        # Imported here: every run (not only sweeps) builds the callback, and reports pull in pandas.
        from hnas.reports.results import summarize_sweep, write_summary

        try:
            runs, summary = summarize_sweep(sweep_dir)
            csv_path, md_path = write_summary(runs, summary, sweep_dir)
            log.info("sweep summary of %d setting(s), %d job(s) without a result, written to %s and %s",
                     len(summary), len(runs.failed), csv_path, md_path)
        except Exception:  # a summary failure must not turn a finished sweep into a failed one
            log.exception("could not write the summary of sweep %s", sweep_dir)
