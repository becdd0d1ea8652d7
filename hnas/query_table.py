"""Query tables: the outcome of every architecture a training oracle has trained, kept so nothing is trained
twice.

A table is a folder under `<results_dir>/query-tables/`, named from the settings that determine an outcome
(space and its options, dataset, the query protocol and its digest, seed):

- `meta.json`: those settings in full; a folder whose meta differs is refused, so outcomes of another
  protocol are never mixed in.
- `queries.jsonl`: an append-only log, one fsynced JSON line per finished query (arch, validation accuracy,
  measured seconds, images, parameters, device). A line cut short by a kill is dropped; any other line that
  is not a valid record is an error naming the line.
- `runs/<digest of the arch>/`: the training folder of each architecture (hnas.train.fit: checkpoint after
  every epoch, metrics.csv, tb/), so a query killed mid-training resumes from its last epoch, and a record
  lost from the log is rebuilt from the finished checkpoint without training.

Several processes (the jobs of a sweep) may share a table: training an architecture holds its lock file, and
the log is re-read under it, so a second process waits for the first and reads its outcome.
"""

import hashlib
import json
import math
from contextlib import contextmanager
from pathlib import Path

from hnas.errors import HnasError
from hnas.io import append_line, atomic_write_json, complete_lines, drop_partial_last_line, locked

FORMAT = "hnas-query-table"
VERSION = 1
LOG = "queries.jsonl"
RECORD_KEYS = ("arch", "val_acc", "cost_s")


def digest(text, length=16):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def _corrupt(path, why):
    return HnasError(
        f"query table {path} is corrupt or foreign: {why}.\n"
        "Nothing was read from it and nothing is lost: every trained network's checkpoint is in its runs/ "
        "folder. Fix or delete the bad line (a deleted record is rebuilt from its finished checkpoint without "
        "training), or move the table away to train afresh."
    )


class QueryTable:
    """The query table of `settings` (plain JSON values: its meta) under `results_dir`, whose architectures
    are canonicalised by `validate` (the space's)."""

    def __init__(self, results_dir, settings, validate):
        self.settings = settings
        self.validate = validate
        self.folder = Path(results_dir) / "query-tables" / self.name_for(settings)
        self.records = {}
        self._check_meta()
        self.reload()

    @staticmethod
    def name_for(settings):
        options = [str(v) for v in settings["space_options"].values()]
        protocol = digest(json.dumps(settings["protocol"], sort_keys=True), 10)
        return "-".join([settings["space"], *options, settings["dataset"], settings["protocol"]["name"], protocol,
                         f"seed{settings['seed']}"])

    def _check_meta(self):
        path = self.folder / "meta.json"
        meta = {"format": FORMAT, "version": VERSION, "settings": self.settings}
        if not path.exists():
            try:
                atomic_write_json(path, meta)
            except OSError as error:
                raise HnasError(f"cannot write the query table at {self.folder} ({error.strerror or error}): point "
                                "paths.results_dir (or $HNAS_RESULTS_DIR) to a writable folder") from None
            return
        try:
            have = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as error:
            raise _corrupt(path, f"not valid JSON ({error})") from None
        if have != json.loads(json.dumps(meta)):
            written = have.get("settings") if isinstance(have, dict) else have
            raise _corrupt(path, f"it was written for other settings ({written}), not {self.settings}")

    def reload(self):
        """Read the log again (another process may have added records)."""
        path = self.folder / LOG
        self.records = {}
        if not path.exists():
            return
        for number, line in enumerate(complete_lines(path), start=1):
            try:
                record = self._check(json.loads(line))
            except (ValueError, KeyError, TypeError, HnasError) as error:
                raise _corrupt(path, f"line {number} is not a query record ({error})") from None
            self.records.setdefault(record["arch"], record)

    def _check(self, record):
        if not isinstance(record, dict):
            raise TypeError(f"a {type(record).__name__}, not an object")
        missing = [k for k in RECORD_KEYS if k not in record]
        if missing:
            raise KeyError(f"no {', '.join(missing)}")
        if self.validate(record["arch"]) != record["arch"]:
            raise ValueError(f"{record['arch']!r} is not in canonical form")
        for key, high in (("val_acc", 100.0), ("cost_s", math.inf)):
            value = record[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= high:
                raise ValueError(f"{key} is {value!r}, not a number in [0, {high}]")
        return record

    def get(self, arch):
        return self.records.get(arch)

    def number(self, arch):
        """The 1-based position of `arch` in the log (the order this table trained its architectures in)."""
        for n, known in enumerate(self.records, start=1):
            if known == arch:
                return n
        raise HnasError(f"{arch} has not been queried, so it has no number in {self.folder / LOG}")

    def run_folder(self, arch):
        return self.folder / "runs" / digest(arch)

    @contextmanager
    def training(self, arch):
        """Hold `arch`'s lock for the block (and re-read the log once held)."""
        folder = self.run_folder(arch)
        folder.mkdir(parents=True, exist_ok=True)
        with locked(folder.with_suffix(".lock")):
            self.reload()
            yield folder

    def add(self, record):
        record = self._check(record)
        path = self.folder / LOG
        with locked(self.folder / ".log.lock"):
            drop_partial_last_line(path)
            with open(path, "a", encoding="utf-8") as handle:
                append_line(handle, json.dumps(record))
        self.records.setdefault(record["arch"], record)
        return record
