"""Metric tables: metric values for many architectures, written incrementally so no work is ever lost.

A table is a folder under `<results_dir>/metric-tables/`, named from the settings that determine its values:

- `meta.json`: the settings (space, layout, dataset, probe batch) plus the versions and device of its creation.
  Opening a folder with other settings is refused, so values computed differently are never mixed.
- `rows*.jsonl`: append-only logs, one JSON object per computed architecture (one file per shard, so
  concurrent shards never write the same file). Each line is written and fsynced whole; a line cut short by a
  kill is the last line of its file and is dropped (and truncated away before the next append).
- `table.csv`: the merged table (one row per architecture, one column per metric, `seconds`), rewritten
  atomically from the logs after each run. This is the file to read from other tools.
"""

import json
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import pandas as pd

from hnas.errors import HnasError
from hnas.io import atomic_write_text

FORMAT = "hnas-metric-table"
VERSION = 1


@dataclass(frozen=True)
class TableSettings:
    space: str
    layout: str
    dataset: str
    num_classes: int
    batch_size: int
    per_class: Optional[int]
    split: str
    seed: int
    per_arch: bool

    @classmethod
    def from_config(cls, cfg):
        probe = cfg.probe
        return cls(
            space=cfg.space.name,
            layout=getattr(cfg.space.layout, "value", cfg.space.layout),
            dataset=cfg.dataset.name,
            num_classes=int(cfg.dataset.num_classes),
            batch_size=int(probe.batch_size),
            per_class=probe.per_class,
            split=probe.split,
            seed=int(probe.seed),
            per_arch=bool(probe.per_arch),
        )

    @property
    def name(self):
        parts = [self.space, self.layout, self.dataset, self.split, f"b{self.batch_size}", f"seed{self.seed}"]
        if self.per_class is not None:
            parts.append(f"pc{self.per_class}")
        if self.per_arch:
            parts.append("perarch")
        return "-".join(parts)


def _versions():
    import torch

    from hnas import __version__

    return {"hnas": __version__, "torch": torch.__version__, "python": platform.python_version()}


def _corrupt(path, why):
    return HnasError(
        f"metric table {path} is corrupt or foreign: {why}.\n"
        "It was not read. Move it away (or pass another paths.results_dir) and rerun to recompute it."
    )


class MetricTable:
    def __init__(self, folder, settings, device="cpu"):
        self.folder = Path(folder)
        self.settings = settings
        self.folder.mkdir(parents=True, exist_ok=True)
        self._check_or_write_meta(device)
        self.rows = self._read_rows()

    @staticmethod
    def folder_for(results_dir, settings):
        return Path(results_dir) / "metric-tables" / settings.name

    @classmethod
    def for_settings(cls, results_dir, settings, device="cpu"):
        """The table of these settings, created if it does not exist yet."""
        return cls(cls.folder_for(results_dir, settings), settings, device)

    @classmethod
    def existing(cls, results_dir, settings):
        """The table of these settings, or None where none has been written yet."""
        folder = cls.folder_for(results_dir, settings)
        return cls(folder, settings) if (folder / "meta.json").exists() else None

    # ---- meta ----------------------------------------------------------------------------------------
    def _check_or_write_meta(self, device):
        meta_path = self.folder / "meta.json"
        if not meta_path.exists():
            meta = {"format": FORMAT, "version": VERSION, "settings": asdict(self.settings),
                    "created_with": _versions(), "device": str(device)}
            atomic_write_text(meta_path, json.dumps(meta, indent=2))
            return
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

    # ---- rows ----------------------------------------------------------------------------------------
    def _read_rows(self):
        """Merge every rows*.jsonl into {arch: {"index", "metrics", "seconds"}}."""
        from hnas.spaces import get_space

        space = get_space(self.settings.space)
        merged = {}
        for path in sorted(self.folder.glob("rows*.jsonl")):
            lines = path.read_bytes().split(b"\n")
            # The text after the last newline is empty, or a line cut short by a kill: never a full row.
            for number, line in enumerate(lines[:-1], start=1):
                try:
                    row = json.loads(line)
                    arch = space.validate(row["arch"])
                    metrics = {str(k): float(v) for k, v in row["metrics"].items()}
                    seconds = float(row["seconds"])
                except (ValueError, KeyError, TypeError, AttributeError, HnasError) as error:
                    raise _corrupt(path, f"line {number} is not a valid row ({error})") from None
                entry = merged.setdefault(arch, {"index": row.get("index"), "metrics": {}, "seconds": 0.0})
                new = {k: v for k, v in metrics.items() if k not in entry["metrics"]}
                entry["metrics"].update(new)
                if new:
                    entry["seconds"] += seconds
        return merged

    def missing(self, arch, metrics):
        have = self.rows.get(arch, {}).get("metrics", {})
        return [m for m in metrics if m not in have]

    def values(self, arch):
        return dict(self.rows.get(arch, {}).get("metrics", {}))

    def writer(self, shard=0, num_shards=1):
        name = "rows.jsonl" if num_shards == 1 else f"rows-shard{shard}of{num_shards}.jsonl"
        return RowWriter(self.folder / name, self)

    # ---- export --------------------------------------------------------------------------------------
    def frame(self):
        records = [
            {"index": entry["index"], "arch": arch, **entry["metrics"], "seconds": entry["seconds"]}
            for arch, entry in self.rows.items()
        ]
        frame = pd.DataFrame.from_records(records, columns=None if records else ["index", "arch", "seconds"])
        metric_columns = sorted(c for c in frame.columns if c not in ("index", "arch", "seconds"))
        frame = frame[["index", "arch", *metric_columns, "seconds"]]
        return frame.sort_values(["index", "arch"], na_position="last").reset_index(drop=True)

    def export_csv(self):
        path = self.folder / "table.csv"
        atomic_write_text(path, self.frame().to_csv(index=False, float_format="%.17g"))
        return path


class RowWriter:
    """Appends rows to one log file; each row is one fsynced line."""

    def __init__(self, path, table):
        self.path, self.table = Path(path), table
        _drop_partial_last_line(self.path)
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, arch, index, metrics, seconds, device):
        row = {"arch": arch, "index": index, "metrics": metrics, "seconds": seconds, "device": str(device)}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        entry = self.table.rows.setdefault(arch, {"index": index, "metrics": {}, "seconds": 0.0})
        entry["metrics"].update(metrics)
        entry["seconds"] += seconds

    def close(self):
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _drop_partial_last_line(path):
    if not path.exists():
        return
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep != len(data):
        with open(path, "r+b") as f:
            f.truncate(keep)
