"""NASLib's NB101 files: its pickled benchmark (the official API's dicts) and its zero-cost proxy JSON.

The pickle is `{module_hash: (fixed_stat, computed_stat)}`, the layout of the official API's
`fixed_statistics` / `computed_statistics` (NASLib naslib/utils/nb101_api.py; its test asset nb101_dummy.pkl
holds 30 cells): fixed_stat has module_adjacency (a 0/1 matrix), module_operations and trainable_parameters;
computed_stat maps epochs to the list of runs, each a dict of table.RUN_FIELDS.

Unpickling can run any code the file holds, so reading a pickle needs `trust_pickle=True`, given only for a
file the user trusts.
"""

import json
import pickle
from pathlib import Path

import numpy as np

from hnas import paths
from hnas.benchmarks.nb101.build import TableBuilder
from hnas.benchmarks.nb101.schema import BUDGETS, RUN_FIELDS, check_hash, check_spec
from hnas.errors import HnasError

HOW_TO_GET_PICKLE = ("NASLib's NB101 pickle (e.g. its test asset tests/assets/nb101_dummy.pkl, "
                     "https://github.com/automl/NASLib)")
HOW_TO_GET_ZC = "NASLib's zero-cost benchmark zc_nasbench101.json (https://github.com/automl/NASLib, naslib/data)"


def table_from_naslib_pickle(path, trust_pickle=False):
    """The NB101Table of a NASLib pickle; `trust_pickle=True` says the file is trusted (unpickling runs code)."""
    path = paths.require_file(path, "NASLib NB101 pickle", HOW_TO_GET_PICKLE)
    if not trust_pickle:
        raise HnasError(
            f"{path} is a Python pickle, and loading a pickle can run any code it holds. Read it only if you "
            f"trust where it comes from: pass --trust-pickle (trust_pickle=True)."
        )
    try:
        with open(path, "rb") as f:
            data = pickle.load(f)
    except Exception as err:  # unpickling a foreign or damaged file raises nearly anything
        raise HnasError(f"cannot unpickle {path} ({type(err).__name__}: {err}); expected {HOW_TO_GET_PICKLE}") from err
    if not isinstance(data, dict):
        raise HnasError(f"{path} holds a {type(data).__name__}, not NASLib's dict "
                        f"{{module_hash: (fixed_stat, computed_stat)}}")
    builder = TableBuilder(path)
    for module_hash, entry in data.items():
        try:
            _add_cell(builder, module_hash, entry)
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            raise HnasError(f"{path}: cell {module_hash!r} is not in NASLib's NB101 layout: {err}") from err
    return builder.build()


def _add_cell(builder, module_hash, entry):
    check_hash(module_hash)
    fixed, computed = entry
    matrix = np.asarray(fixed["module_adjacency"])
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or not np.isin(matrix, (0, 1)).all():
        raise ValueError(f"module_adjacency is not a square 0/1 matrix: {matrix.tolist()}")
    adjacency = "".join(str(int(x)) for x in matrix.flat)
    ops = tuple(fixed["module_operations"])
    check_spec(adjacency, ops)
    params = fixed["trainable_parameters"]
    if not isinstance(params, (int, np.integer)) or params <= 0:
        raise ValueError(f"trainable_parameters {params!r} is not a positive count")
    for epochs, runs in computed.items():
        if epochs not in BUDGETS:
            raise ValueError(f"epochs {epochs!r} is not an NB101 budget {BUDGETS}")
        for run in runs:
            values = tuple(float(run[name]) for name in RUN_FIELDS)
            builder.add(module_hash, int(epochs), adjacency, ops, int(params), values)


def read_zc_proxies(path, dataset="cifar10"):
    """NASLib's NB101 zero-cost scores as plain data: {arch key: {proxy name: value, ...}}.

    The keys are kept exactly as the file has them (the text of NASLib's 56-tuple: the 7x7 adjacency row-major
    then 7 NASLib op codes). Each value dict holds the proxy scores and `val_accuracy` (percent, one random
    108-epoch run) and `params` (millions), all floats.
    """
    path = paths.require_file(path, "NASLib zero-cost JSON", HOW_TO_GET_ZC)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:
        raise HnasError(f"cannot read {path} as JSON ({err}); expected {HOW_TO_GET_ZC}") from err
    section = data.get("nasbench101") if isinstance(data, dict) else None
    if not isinstance(section, dict) or not isinstance(section.get(dataset), dict):
        found = ", ".join(sorted(section)) if isinstance(section, dict) else "none"
        raise HnasError(f"{path} has no NB101 scores for dataset {dataset!r}: expected "
                        f"{{'nasbench101': {{'{dataset}': {{arch key: scores}}}}}}; datasets found: {found}")
    cells = section[dataset]
    scores = {}
    for key, values in cells.items():
        if not isinstance(values, dict) or not {"val_accuracy", "params"} <= set(values):
            raise HnasError(f"{path}: entry {key} is not a dict of scores with val_accuracy and params")
        bad = [name for name, value in values.items() if isinstance(value, bool) or not isinstance(value, (int, float))]
        if bad:
            raise HnasError(f"{path}: entry {key} has non-numeric value(s) for {', '.join(bad)}")
        scores[key] = {name: float(value) for name, value in values.items()}
    return scores
