"""Finished search runs, read back from their files: loading, checking and the per-setting summary.

Everything is rebuilt from the files each search run writes (result.json, queries.csv), so it works on a
finished sweep, a partly failed one (jobs without result.json are skipped and counted), or loose run folders.
An input folder is a run folder (it holds result.json) or any folder above run folders (a sweep). What a run
reports (its test accuracies and their column names, the oracle it queried) is read from its result.json, so
reports work for any space and oracle.
"""

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hnas.errors import HnasError
from hnas.io import atomic_write_text
from hnas.search.config import is_int, is_number

log = logging.getLogger(__name__)

OTHER_VALUES = ["val_acc", "search_cost_s", "metric_s", "n_queries"]
# Override keys that do not define a setting: the seed is what a setting is averaged over; algorithm and
# metric have their own columns; folders, devices and launcher settings do not change a result.
_IGNORED_KEYS = ("seed", "search", "metric", "stage", "device")
_IGNORED_PREFIXES = ("paths.", "hydra.")


@dataclass
class Runs:
    """The usable runs of a report's inputs: one row per run in `frame` (setting columns, seed, values,
    run_dir), the test accuracies they report (`test_columns`: {dataset: column}) and the oracle they queried
    (its registered name, for the benchmark's optimum; None when a run does not record it); `failed`: the
    job folders of a sweep that have no result.json (summarize_sweep)."""

    frame: pd.DataFrame
    test_columns: dict = field(default_factory=dict)
    oracle: str = None
    failed: list = field(default_factory=list)

    def __len__(self):
        return len(self.frame)

    @property
    def value_columns(self):
        return [*self.test_columns.values(), *OTHER_VALUES]

    @property
    def setting(self):
        """The columns that define a setting: algorithm, metric, then every other override key, in order."""
        fixed = {"seed", "run_dir", *self.value_columns}
        return [c for c in self.frame.columns if c not in fixed]


def find_run_dirs(inputs):
    """Run folders (holding result.json) under each input folder, sorted, without duplicates."""
    found = []
    for folder in [Path(p) for p in ([inputs] if isinstance(inputs, (str, Path)) else inputs)]:
        if (folder / "result.json").is_file():
            found.append(folder)
        else:
            found.extend(sorted(p.parent for p in folder.rglob("result.json")))
    return list(dict.fromkeys(p.resolve() for p in found))


def _setting_overrides(overrides):
    """{key: value} of the command-line overrides that define a setting."""
    out = {}
    for item in overrides or []:
        key, sep, value = item.lstrip("+~").partition("=")
        if sep and key not in _IGNORED_KEYS and not key.startswith(_IGNORED_PREFIXES):
            out[key] = value
    return out


def result_problems(result):
    """What keeps a result.json payload out of a report: missing keys and wrong types (empty when usable).

    Required: `algorithm` (a string), `test_columns` ({dataset: column name}) and `test_acc` (a number per
    dataset of test_columns); the other keys a report reads may be absent but must have the right type.
    """
    if not isinstance(result, dict):
        return [f"it holds a JSON {type(result).__name__}, not an object"]
    problems = []
    algorithm = result.get("algorithm")
    if not (isinstance(algorithm, str) and algorithm):
        problems.append("'algorithm' is missing or not a non-empty string")
    columns = result.get("test_columns")
    if not (isinstance(columns, dict) and all(isinstance(c, str) for c in columns.values())):
        problems.append("'test_columns' is missing or not an object of column names")
        columns = {}
    test_acc = result.get("test_acc")
    if not isinstance(test_acc, dict):
        problems.append("'test_acc' is missing or not an object")
    else:
        problems += [f"'test_acc.{ds}' is missing or not a number" for ds in columns
                     if not is_number(test_acc.get(ds))]
    optional = [  # (key, check, what it must be)
        ("metric", lambda v: isinstance(v, str), "a string"),
        ("seed", is_int, "an integer"),
        ("overrides", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"),
        ("query", lambda v: isinstance(v, dict), "an object"),
        *[(key, is_number, "a number") for key in OTHER_VALUES],
    ]
    problems += [f"'{key}' is not {what}" for key, check, what in optional
                 if result.get(key) is not None and not check(result[key])]
    return problems


def _read_result(path):
    """result.json's payload, or None (with a warning naming the file) when a report cannot use it."""
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        log.warning("skipping %s: unreadable (%s)", path, error)
        return None
    problems = result_problems(result)
    if problems:
        log.warning("skipping %s: %s (a finished search run writes them all; rerun it or remove the folder)",
                    path, "; ".join(problems))
        return None
    return result


def load_results(inputs):
    """The Runs of the run folders under `inputs`. A result.json that cannot be read, or lacks what a report
    needs (result_problems), is skipped with a warning naming the file; runs that report different test
    accuracies (other oracles) cannot share a report and are refused."""
    rows, test_columns, oracle, first = [], None, None, None
    for folder in find_run_dirs(inputs):
        result = _read_result(folder / "result.json")
        if result is None:
            continue
        if test_columns is None:
            test_columns, first = result["test_columns"], folder
            oracle = (result.get("query") or {}).get("oracle")
        elif result["test_columns"] != test_columns:
            raise HnasError(f"{folder} reports test accuracies {result['test_columns']} but {first} reports "
                            f"{test_columns}: runs of different oracles need separate reports")
        row = {"algorithm": result["algorithm"], "metric": result.get("metric") or "-"}
        row.update(_setting_overrides(result.get("overrides")))
        row["seed"] = result.get("seed")
        row.update({column: result["test_acc"][ds] for ds, column in test_columns.items()})
        row.update({key: result.get(key, math.nan) for key in OTHER_VALUES})
        row["run_dir"] = str(folder)
        rows.append(row)
    runs = Runs(pd.DataFrame(rows), test_columns or {}, oracle)
    if runs.frame.empty:
        return runs
    setting = runs.setting
    runs.frame[setting] = runs.frame[setting].fillna("").astype(str)
    # A sweep over metrics repeats the runs of algorithms that read no metric: count each (setting, seed) once.
    runs.frame = runs.frame.drop_duplicates(subset=[*setting, "seed"], keep="first").reset_index(drop=True)
    return runs


def failed_jobs(sweep_dir):
    """Job folders of a sweep (they hold .hydra/) without a result.json: failed or unfinished jobs."""
    jobs = (p.parent for p in Path(sweep_dir).rglob(".hydra"))
    return sorted(str(job) for job in jobs if not (job / "result.json").exists())


def failure_of(job):
    """(log file, what it says went wrong) of a failed or unfinished job folder: its last ERROR line, else
    its last line (a killed job's last progress), else that it wrote no log."""
    logs = sorted(Path(job).glob("*.log"))
    if not logs:
        return "", "no log written (not started, or killed before it logged)"
    lines = [line.strip() for line in logs[0].read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "[ERROR]" in line]
    if errors:
        return str(logs[0]), errors[-1].split("] - ", 1)[-1]
    return str(logs[0]), ("unfinished: last logged " + lines[-1].split("] - ", 1)[-1]) if lines else "empty log"


# ----------------------------------------------------------------------------------------------------------
# Summary (mean and std per setting)


def summarize(runs):
    """Mean and std (numpy's, ddof=0, as NAS papers report) of every value per setting, plus n_seeds."""
    if runs.frame.empty:
        return pd.DataFrame()
    setting = runs.setting
    rows = []
    for key, group in runs.frame.groupby(setting, sort=True, dropna=False):
        row = dict(zip(setting, key if isinstance(key, tuple) else (key,)))
        for column in runs.value_columns:
            values = group[column].astype(float).to_numpy()
            row[f"{column}_mean"] = float(np.mean(values))
            row[f"{column}_std"] = float(np.std(values))
        row["n_seeds"] = len(group)
        row["seeds"] = " ".join(str(s) for s in sorted(group["seed"].dropna().astype(int)))
        rows.append(row)
    return pd.DataFrame(rows)


def summarize_sweep(sweep_dir):
    """The Runs of every run folder under `sweep_dir` (finished or partly failed sweep) and their summary."""
    runs = load_results([sweep_dir])
    failed = failed_jobs(sweep_dir)
    if failed:
        log.warning("%d job folder(s) under %s have no result.json (failed or unfinished): %s", len(failed),
                    sweep_dir, ", ".join(failed[:5]) + (" ..." if len(failed) > 5 else ""))
    runs.failed = failed
    return runs, summarize(runs)


def write_summary(runs, summary, out_dir, stem="summary"):
    """summary.csv (every number) and summary.md (mean +- std) in `out_dir`; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    atomic_write_text(csv_path, summary.to_csv(index=False))
    atomic_write_text(md_path, _summary_markdown(runs, summary))
    return csv_path, md_path


def summary_setting(summary):
    return [c for c in summary.columns if not c.endswith(("_mean", "_std")) and c not in ("n_seeds", "seeds")]


def pm(mean, std, digits=2):
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _summary_markdown(runs, summary):
    failed = ""
    if runs.failed:
        rows = [[f"`{job}`", f"`{where}`" if where else "-", what.replace("|", "\\|")]
                for job, (where, what) in ((job, failure_of(job)) for job in runs.failed)]
        failed = (f"\n{len(runs.failed)} job(s) without a result.json (failed or unfinished; rerun them alone "
                  "with their overrides, .hydra/overrides.yaml):\n\n" + markdown_table(["job", "log", "what"], rows))
    if summary.empty:
        return "No finished runs (no result.json) found.\n" + failed
    setting = summary_setting(summary)
    header = [*setting, *runs.test_columns, "search cost (s)", "metric time (s)", "queries", "n seeds"]
    rows = []
    for _, r in summary.iterrows():
        rows.append([
            *[str(r[c]) for c in setting],
            *[pm(r[f"{c}_mean"], r[f"{c}_std"]) for c in runs.test_columns.values()],
            pm(r["search_cost_s_mean"], r["search_cost_s_std"], 0),
            pm(r["metric_s_mean"], r["metric_s_std"], 0),
            f"{r['n_queries_mean']:.1f}",
            str(r["n_seeds"]),
        ])
    return markdown_table(header, rows) + failed


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
