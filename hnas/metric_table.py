"""Metric tables: metric values for many architectures, written incrementally so no work is ever lost.

A table is a folder under `<results_dir>/metric-tables/`, named from the settings that determine its values:

- `meta.json`: the settings (space, layout, dataset, probe batch), the probe record (the split and files the
  images were read from and the SHA-256 of the probe batch), and the versions, device and thread count of its
  creation. A folder with other settings, or rows computed on other images, is refused, so values computed
  differently are never mixed.
- `rows*.jsonl`: append-only logs, one JSON object per computed architecture (one file per shard, so
  concurrent shards never write the same file). Each line is written and fsynced whole; a line cut short by a
  kill is the last line of its file and is dropped (and truncated away before the next append). Every row is
  checked on read: a valid arch string, its official index, finite-or-NaN numbers.
- `table.csv`: the merged table (one row per architecture, one column per metric, `seconds`), rewritten
  atomically from all the logs (under a lock, so the last of several shards writes every row). This is the
  file to read from other tools.
"""

import gzip
import json
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import pandas as pd

from hnas import data, paths
from hnas.errors import HnasError
from hnas.io import append_line, atomic_write_text, complete_lines, drop_partial_last_line, locked, try_lock
from hnas.oracles import official_indexer
from hnas.spaces.registry import space_options

FORMAT = "hnas-metric-table"
VERSION = 3  # 2: meta.json holds the probe record; 3: the space's options, not an NB201 layout


@dataclass(frozen=True)
class TableSettings:
    space: str
    space_options: dict  # what the space is created with (NB201: {"layout": ...}), in its config's key order
    dataset: str
    num_classes: int
    batch_size: Optional[int]
    per_class: Optional[int]
    split: str  # the split the probe images are read from (see hnas.data.resolve_split)
    seed: int
    per_arch: bool

    @classmethod
    def from_config(cls, cfg):
        probe = cfg.probe
        return cls(
            space=cfg.space.name,
            space_options=space_options(cfg.space),
            dataset=cfg.dataset.name,
            num_classes=data.num_classes(cfg.dataset.name),
            batch_size=None if probe.batch_size is None else int(probe.batch_size),
            per_class=probe.per_class,
            split=data.resolve_split(cfg.dataset.name, probe.split),
            seed=int(probe.seed),
            per_arch=bool(probe.per_arch),
        )

    def create_space(self):
        """The space (with its options) whose networks the table's values are computed on."""
        from hnas.spaces import create_space

        return create_space(self.space, **self.space_options)

    @property
    def name(self):
        batch = f"b{self.batch_size}" if self.batch_size is not None else f"b{self.per_class}x{self.num_classes}"
        options = [str(value) for value in self.space_options.values()]
        parts = [self.space, *options, self.dataset, self.split, batch, f"seed{self.seed}"]
        if self.per_class is not None:
            parts.append(f"pc{self.per_class}")
        if self.per_arch:
            parts.append("perarch")
        return "-".join(parts)


def environment(device):
    """What a table's meta records about the machine that created it (values may differ in the last digits
    between devices, thread counts and library versions; they do not name the table)."""
    import numpy
    import torch

    from hnas import __version__

    return {
        "versions": {"hnas": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
                     "python": platform.python_version()},
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
    }


def _corrupt(path, why):
    return HnasError(
        f"metric table {path} is corrupt or foreign: {why}.\n"
        "It was not read. Move it away (or pass another paths.results_dir) and rerun to recompute it."
    )


def _unwritable(path, error):
    return HnasError(
        f"cannot write the metric table at {path} ({error.strerror or error}).\n"
        "Point paths.results_dir (or $HNAS_RESULTS_DIR) to a writable folder; the data folder may stay read-only."
    )


class MetricTable:
    """A table, read and checked, from up to two layers of folders of the same name: the one shipped in the
    package (read-only, hnas/embedded/metric-tables/) and the one in the results folder, which new rows go
    to. `existing` finds a table; `for_probe` opens one to write to."""

    def __init__(self, folder, settings, shipped=None):
        self.folder = Path(folder)  # the results folder's layer: written to, exported to
        self.shipped = None if shipped is None else Path(shipped)
        self.settings = settings
        self.layers = [f for f in (self.shipped, self.folder) if f is not None and (f / "meta.json").exists()]
        self.metas = {}
        for layer in self.layers:  # in order: the results folder's meta is checked against the shipped one
            self.metas[layer] = self._read_meta(layer)
        self.rows = self._read_rows()

    @staticmethod
    def folder_for(results_dir, settings):
        return Path(results_dir) / "metric-tables" / settings.name

    @classmethod
    def existing(cls, results_dir, settings):
        """The table of these settings (the shipped rows and the results folder's), or None where neither has
        been written."""
        folder = cls.folder_for(results_dir, settings)
        shipped = cls.folder_for(paths.embedded_dir(), settings)
        if not (folder / "meta.json").exists() and any(folder.glob("rows*.jsonl")):
            raise _corrupt(folder / "meta.json", "the rows have no meta.json, so nothing says which probe batch "
                           "they were computed on")
        table = cls(folder, settings, shipped if (shipped / "meta.json").exists() else None)
        return table if table.layers else None

    @classmethod
    def for_probe(cls, results_dir, settings, probe, device, existing=None):
        """The table of these settings, to add rows computed on the probe batch `probe` (its record, see
        hnas.metric_source.probe_record): created if new, else checked to hold rows of the same batch.
        `existing`: the table as already read by the caller (MetricTable.existing), so it is not read again."""
        table = existing if existing is not None else cls.existing(results_dir, settings)
        folder = cls.folder_for(results_dir, settings)
        if table is None or folder not in table.layers:
            meta = {"format": FORMAT, "version": VERSION, "settings": asdict(settings), "probe": probe,
                    **environment(device)}
            try:
                atomic_write_text(folder / "meta.json", json.dumps(meta, indent=2) + "\n")
            except OSError as error:
                raise _unwritable(folder, error) from None
            table = cls.existing(results_dir, settings)
        table.check_probe(probe)
        return table

    @staticmethod
    def not_found(results_dir, settings, what=None):
        """The error for settings that no table has: where it was looked for, what is shipped, the fix."""
        shipped = sorted(p.parent.name for p in (paths.embedded_dir() / "metric-tables").glob("*/meta.json"))
        return HnasError(
            f"no metric table for these settings ({settings.name}){' holds ' + what if what else ''}: looked in "
            f"{MetricTable.folder_for(results_dir, settings)} and among the tables shipped with hnas "
            f"({', '.join(shipped) or 'none'}).\nRun stage=precompute with the same space, dataset and probe "
            "settings first, or choose the settings of a shipped table (e.g. experiment=hnas_nb201)."
        )

    # ---- meta ----------------------------------------------------------------------------------------
    def _read_meta(self, layer):
        meta_path = layer / "meta.json"
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise _corrupt(meta_path, f"not valid JSON ({error})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise _corrupt(meta_path, f"not a {FORMAT} file")
        if meta.get("version") != VERSION:
            raise _corrupt(meta_path, f"format version {meta.get('version')}, this hnas reads {VERSION}")
        if meta.get("settings") != asdict(self.settings):
            raise _corrupt(meta_path, f"its settings {meta.get('settings')} differ from {asdict(self.settings)}")
        probe = meta.get("probe")
        if not isinstance(probe, dict) or not isinstance(probe.get("sha256"), str):
            raise _corrupt(meta_path, "it has no probe record (probe.sha256)")
        if self.metas and probe["sha256"] != next(iter(self.metas.values()))["probe"]["sha256"]:
            raise _corrupt(meta_path, "its probe batch differs from that of the shipped table of the same name")
        return meta

    @property
    def probe(self):
        """The probe record of the table's rows (every layer has the same; see _read_meta)."""
        return next(iter(self.metas.values()))["probe"]

    def check_probe(self, probe):
        """Refuse to add rows computed on another probe batch than the table's."""
        layer = self.layers[0]
        have = self.probe
        if have["sha256"] != probe["sha256"]:
            fix = ("Use other probe settings (e.g. probe.seed) for a table of your own images"
                   if layer == self.shipped else
                   "Restore the data the table was computed on, or move the table away (or pass another "
                   "paths.results_dir) to compute a new one")
            raise HnasError(
                f"metric table {layer} was computed on other probe images than this run's:\n"
                f"  table: {have.get('source')} ({have.get('split')} split), batch sha256 {have['sha256'][:16]}\n"
                f"  now:   {probe.get('source')} ({probe.get('split')} split), batch sha256 {probe['sha256'][:16]}\n"
                f"Its values would not be comparable with new ones. {fix}."
            )

    # ---- rows ----------------------------------------------------------------------------------------
    def _read_rows(self):
        """Merge the logs of every layer into {arch: {"index", "metrics", "passes"}}, checking every
        row; a metric's value is that of the first line that has it, and `passes` lists (metrics, seconds) of
        the lines that gave values, so a search is charged for the computations of its own metrics
        (seconds_for), not for every column added to the table since."""
        space = self.settings.create_space()
        index_of = official_indexer(space.name)
        merged = {}
        for layer in self.layers:
            for path in sorted(layer.glob("rows*.jsonl")) + sorted(layer.glob("rows*.jsonl.gz")):
                for number, line in enumerate(_complete_lines(path), start=1):
                    try:
                        arch, index, metrics, seconds = _parse_row(json.loads(line), space, index_of)
                    except (ValueError, KeyError, TypeError, AttributeError, HnasError) as error:
                        raise _corrupt(path, f"line {number} is not a valid row ({error})") from None
                    _add(merged.setdefault(arch, _new_entry(index)), metrics, seconds)
        return merged

    def seconds_for(self, arch, metrics):
        """The seconds of the computations that gave `arch` its values of `metrics` (a line that computed
        several metrics together counts whole for any of them)."""
        wanted = set(metrics)
        return sum(seconds for names, seconds in self.rows[arch]["passes"] if wanted.intersection(names))

    def missing(self, arch, metrics):
        have = self.rows.get(arch, {}).get("metrics", {})
        return [m for m in metrics if m not in have]

    def writer(self, shard=0, num_shards=1, exclusive=False):
        name = "rows.jsonl" if num_shards == 1 else f"rows-shard{shard}of{num_shards}.jsonl"
        try:
            return RowWriter(self.folder / name, self, exclusive)
        except OSError as error:
            raise _unwritable(self.folder, error) from None

    # ---- export --------------------------------------------------------------------------------------
    def frame(self):
        records = [
            {"index": entry["index"], "arch": arch, **entry["metrics"],
             "seconds": sum(seconds for _, seconds in entry["passes"])}
            for arch, entry in self.rows.items()
        ]
        frame = pd.DataFrame.from_records(records, columns=None if records else ["index", "arch", "seconds"])
        metric_columns = sorted(c for c in frame.columns if c not in ("index", "arch", "seconds"))
        frame = frame[["index", "arch", *metric_columns, "seconds"]]
        return frame.sort_values(["index", "arch"], na_position="last").reset_index(drop=True)

    def csv_is_current(self):
        """True when the results folder's table.csv is newer than every log it holds, or it holds none (the
        shipped rows alone need no export)."""
        csv = self.folder / "table.csv"
        logs = list(self.folder.glob("rows*.jsonl"))
        return all(csv.exists() and csv.stat().st_mtime_ns >= p.stat().st_mtime_ns for p in logs)

    def export_csv(self):
        """Rewrite table.csv from every log of the folder, also those other processes (shards) wrote."""
        path = self.folder / "table.csv"
        try:
            with locked(self.folder / ".export.lock"):
                self.rows = self._read_rows()
                atomic_write_text(path, self.frame().to_csv(index=False, float_format="%.17g"))
        except OSError as error:
            raise _unwritable(self.folder, error) from None
        return path


def _complete_lines(path):
    """The complete lines of a log. The text after the last newline is empty, or a line cut short by a
    kill: never a full row. A shipped log is gzip-compressed and must be whole."""
    if path.suffix != ".gz":
        return complete_lines(path)
    try:
        with gzip.open(path, "rb") as f:
            text = f.read()
    except (OSError, EOFError) as error:
        raise HnasError(f"the shipped metric table file {path} is damaged or truncated ({error}).\n"
                        "Reinstall hnas (pip install -e . in a clean checkout, or git checkout the file).") from None
    return text.split(b"\n")[:-1]


def _new_entry(index):
    return {"index": index, "metrics": {}, "passes": []}


def _add(entry, metrics, seconds):
    """A log line's values into a merged row: the metrics it lacks, and the line's seconds where it gave any."""
    new = {k: v for k, v in metrics.items() if k not in entry["metrics"]}
    if new:
        entry["metrics"].update(new)
        entry["passes"].append((tuple(new), seconds))


def _parse_row(row, space, index_of):
    """(arch, index, metrics, seconds) of one log row (`index_of`: official_indexer of the space); raises on
    anything malformed."""
    arch = space.validate(row["arch"])
    index = row.get("index")
    expected = index_of(arch)
    if index is not None and (isinstance(index, bool) or not isinstance(index, int)):
        raise ValueError(f"index {index!r} is not a whole number")
    if expected is not None and index != expected:
        raise ValueError(f"index {index!r} does not belong to {arch} (its official index is {expected})")
    metrics = row["metrics"]
    if not isinstance(metrics, dict):
        raise TypeError(f"metrics is {type(metrics).__name__}, expected an object")
    metrics = {str(k): _number(v, k) for k, v in metrics.items()}
    return arch, index, metrics, _number(row["seconds"], "seconds")


def _number(value, name):
    # NaN is a legitimate metric value (json writes it as NaN); strings and booleans are not numbers.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} is {value!r}, not a number")
    return float(value)


def ship(folder, shipped_root=None):
    """Add the table in `folder` to the package's shipped tables (maintainers: hnas/embedded/PROVENANCE.md):
    its meta.json, and one gzip-compressed log (byte-reproducible) of the rows already shipped followed by
    every complete row of the folder's logs that is not among them. Keeping the shipped rows means a results
    folder that holds only new rows (a fresh machine's) adds to the shipped table instead of replacing it."""
    folder = Path(folder)
    dest = Path(shipped_root or paths.embedded_dir() / "metric-tables") / folder.name
    dest.mkdir(parents=True, exist_ok=True)
    if (dest / "meta.json").exists():
        shipped, new = (json.loads((f / "meta.json").read_text()) for f in (dest, folder))
        differ = sorted(k for k in shipped.keys() | new.keys() if shipped.get(k) != new.get(k))
        if differ:  # one meta describes every row, so rows of another probe or environment cannot join
            raise HnasError(f"cannot ship {folder}: its meta.json differs from the shipped one in {dest} in "
                            f"{', '.join(differ)}. Ship it under other settings, or recompute its rows where the "
                            "shipped ones were computed")
    (dest / "meta.json").write_bytes((folder / "meta.json").read_bytes())
    logs = ([dest / "rows.jsonl.gz"] if (dest / "rows.jsonl.gz").exists() else []) + sorted(folder.glob("rows*.jsonl"))
    lines = list(dict.fromkeys(line for log in logs for line in _complete_lines(log)))
    with open(dest / "rows.jsonl.gz", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(b"".join(line + b"\n" for line in lines))
    return dest


class RowWriter:
    """Appends rows to one log file; each row is one fsynced line. An `exclusive` writer (the precompute
    stage's) holds the log's lock while it is open: a second precompute of the same table and shard would
    compute every row the first has not yet written, so it stops at once instead. A search computing a few
    missing rows does not take the lock; the jobs of a sweep may add rows side by side."""

    def __init__(self, path, table, exclusive=False):
        self.path, self.table = Path(path), table
        self._file = open(self.path, "a", encoding="utf-8")
        if exclusive and not try_lock(self._file):
            self._file.close()
            raise HnasError(
                f"another precompute is writing {self.path} (the same metric table and shard); a second one "
                "would compute the same architectures again.\nWait for it to end (a rerun then skips its rows), "
                "or split the work between runs with stage.shard=<i> stage.num_shards=<n>, or between "
                "processes of one run with stage.workers=<n>."
            )
        drop_partial_last_line(self.path)  # after the lock: only the log's own writer may cut its last line

    def write(self, arch, index, metrics, seconds, device):
        row = {"arch": arch, "index": index, "metrics": metrics, "seconds": seconds, "device": str(device)}
        append_line(self._file, json.dumps(row))
        _add(self.table.rows.setdefault(arch, _new_entry(index)), metrics, seconds)

    def close(self):
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
