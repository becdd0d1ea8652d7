"""The data shipped in hnas/embedded/: readable, found without a data folder, and equal to what the code computes."""

import gzip
import json
import random
import shutil

import numpy as np
import pytest
import torch

from conftest import configure, needs_data
from hnas import data, metric_source, paths
from hnas.benchmarks.nb201 import load_table, read_table
from hnas.errors import HnasError
from hnas.metric_table import MetricTable, TableSettings
from hnas.metrics import list_metrics

SHIPPED = paths.embedded_dir() / "metric-tables"
REFERENCE_TABLE = "nb201-reference-cifar10-test-b64-seed0"
# Tolerances of rows recomputed on another CPU than the one that computed them. The shipped rows come from
# several machines; float32 convolution kernels differ between CPUs (AVX2 here, AVX-512 elsewhere), and a
# machine reproduces its own rows exactly, but across machines (120 rows recomputed on an AVX2 EPYC) the
# gradient metrics moved by up to 2e-3 relative, ntk_trace 2.3e-3, jacob_cov 5e-5, condnum 4e-2, and the
# signed sums more: grasp 0.44 relative (a Hessian-vector product), plain 30 relative where it is near 0 but
# at most 0.04 of its column's median magnitude; of the newer proxies (40 rows), zico 2e-2 (the spread of
# only two half-batch gradients) and epe_nas 9e-3. Exact counts and weight-only metrics stay exact.
RTOL = {"grad_norm": 1e-2, "snip": 1e-2, "fisher": 1e-2, "jacob_cov": 1e-3, "ntk_trace": 1e-2, "grasp": 1.0,
        "plain": 1e-2, "condnum": 0.1, "synflow": 1e-9, "l2_norm": 1e-9, "naswot": 1e-6, "params": 0, "flops": 0,
        # the newer proxies (float32 networks; swap counts sign patterns, which rounding near 0 can flip)
        "meco": 1e-5, "trainable_layers": 0, "zico": 5e-2, "epe_nas": 2e-2, "az_expressivity": 1e-5,
        "az_progressivity": 1e-4, "az_trainability": 1e-4, "swap": 1e-3, "zen": 1e-5,
        # vkdnw: the entropy of a float32 Fisher spectrum's deciles; te_nas_lr counts distinct codes of 32 images
        "vkdnw": 1e-3, "vkdnw_single": 1e-5, "te_nas_lr": 0}
# plain's absolute tolerance, as a fraction of the median |value| of its column (it crosses 0)
ATOL_OF_MEDIAN = {"plain": 0.1}
# The metrics of the reference table's first computation (the newer proxies were added as columns later).
THIRTEEN = {"grad_norm", "snip", "grasp", "fisher", "synflow", "jacob_cov", "plain", "l2_norm", "naswot",
            "ntk_trace", "condnum", "params", "flops"}


def reference_settings():
    return TableSettings.from_config(configure("experiment=hnas_nb201"))


# Every metric table shipped with hnas, each checked below against the settings its meta records.
SHIPPED_TABLES = sorted(p.parent.name for p in SHIPPED.glob("*/meta.json"))


def shipped_table(name):
    settings = TableSettings(**json.loads((SHIPPED / name / "meta.json").read_text())["settings"])
    assert settings.name == name  # the folder is named by the settings its rows were computed with
    return settings, MetricTable(SHIPPED / name, settings)


def test_the_shipped_benchmark_table_is_the_full_nb201_table():
    table = read_table(paths.embedded_dir() / "nb201.csv.gz")
    assert len(table) == 15_625 and list(table["index"]) == list(range(15_625))
    # The published optima of NAS-Bench-201 (200-epoch test accuracy).
    assert table["cifar10_test_acc_200ep"].max() == pytest.approx(94.373, abs=1e-3)
    assert int(table["cifar10_test_acc_200ep"].idxmax()) == 6111
    assert table["cifar100_test_acc_200ep"].max() == pytest.approx(73.513, abs=1e-3)
    assert table["imagenet16_test_acc_200ep"].max() == pytest.approx(47.311, abs=1e-3)


def test_without_a_data_folder_the_shipped_tables_are_used(tmp_path, monkeypatch):
    monkeypatch.setenv("HNAS_DATA_DIR", str(tmp_path / "no-data"))
    assert load_table().path == paths.embedded_dir() / "nb201.csv.gz"
    table = MetricTable.existing(tmp_path / "results", reference_settings())
    assert table is not None and table.layers == [SHIPPED / REFERENCE_TABLE]
    assert len(table.rows) >= 20 and all(THIRTEEN <= set(entry["metrics"]) for entry in table.rows.values())


def test_the_shipped_meta_records_what_was_read():
    meta = json.loads((SHIPPED / REFERENCE_TABLE / "meta.json").read_text())
    assert meta["settings"]["space_options"] == {"layout": "reference"} and meta["settings"]["batch_size"] == 64
    assert meta["probe"]["split"] == "test" and meta["probe"]["source"] == "image folder cifar10-test-jpg/test"
    assert meta["device"] == "cpu" and meta["torch_threads"] >= 1 and meta["versions"]["torch"]


def test_a_damaged_shipped_file_is_named_with_the_fix(tmp_path, monkeypatch):
    shipped = tmp_path / "embedded"
    shutil.copytree(paths.embedded_dir(), shipped)
    monkeypatch.setattr(paths, "embedded_dir", lambda: shipped)
    rows = shipped / "metric-tables" / REFERENCE_TABLE / "rows.jsonl.gz"
    rows.write_bytes(rows.read_bytes()[: rows.stat().st_size // 2])
    with pytest.raises(HnasError, match=f"(?s){rows}.*damaged or truncated.*Reinstall"):
        MetricTable.existing(tmp_path / "results", reference_settings())
    bench = shipped / "nb201.csv.gz"
    bench.write_bytes(bench.read_bytes()[:1000])
    with pytest.raises(HnasError, match="malformed NAS-Bench-201 table"):
        read_table(bench)


def test_a_results_table_with_another_probe_batch_is_refused_beside_the_shipped_one(tmp_path):
    settings = reference_settings()
    folder = MetricTable.folder_for(tmp_path / "results", settings)
    folder.mkdir(parents=True)
    meta = json.loads((SHIPPED / REFERENCE_TABLE / "meta.json").read_text())
    meta["probe"]["sha256"] = "0" * 64
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(HnasError, match="probe batch differs from that of the shipped table"):
        MetricTable.existing(tmp_path / "results", settings)


def test_other_settings_than_the_shipped_ones_say_what_is_shipped(tmp_path, monkeypatch):
    from hnas.stages import search

    monkeypatch.setenv("HNAS_DATA_DIR", str(tmp_path / "no-data"))
    cfg = configure("experiment=hnas_nb201", "probe.batch_size=32")
    with pytest.raises(HnasError, match=f"b32-seed0.*shipped with hnas \\(.*{REFERENCE_TABLE}"):
        search.run(cfg, tmp_path / "run", tensorboard=False)


@needs_data
@pytest.mark.parametrize("name", SHIPPED_TABLES)
@pytest.mark.parametrize(("n", "per_group"), [(8, 2), pytest.param(300, 75, marks=pytest.mark.slow)])
def test_shipped_rows_are_what_the_engine_computes(data_dir, name, n, per_group):
    """A seeded sample of `n` shipped rows of each shipped table, and `per_group` of the rows of each set of columns
    that fewer rows hold, recomputed now on the probe images of the data folder (300: about 10 minutes on 2 cores,
    `-m slow`)."""
    settings, table = shipped_table(name)
    batch = metric_source.probe_batch_for(settings)
    assert data.fingerprint(*batch) == table.probe["sha256"], "the probe images differ from the shipped table's"
    # n of the rows, and a few of each set of columns that only some rows hold (the newer proxies' samples)
    by_columns = {}
    for arch in sorted(table.rows):
        by_columns.setdefault(frozenset(table.rows[arch]["metrics"]), []).append(arch)
    rng = random.Random(0)
    archs = rng.sample(sorted(table.rows), n)
    for group in sorted(by_columns.values(), key=len)[:-1]:
        archs += rng.sample(group, min(len(group), per_group))
    archs = list(dict.fromkeys(archs))
    columns = {m: [abs(r["metrics"][m]) for r in table.rows.values() if m in r["metrics"]] for m in ATOL_OF_MEDIAN}
    atol = {m: ATOL_OF_MEDIAN[m] * float(np.median(v)) for m, v in columns.items() if v}
    torch.set_num_threads(2)
    for arch in archs:
        shipped = table.rows[arch]["metrics"]
        values, _ = metric_source.compute_arch(arch, settings, list(shipped), batch, torch.device("cpu"))
        for name, value in shipped.items():
            np.testing.assert_allclose(values[name], value, rtol=RTOL[name], atol=atol.get(name, 0),
                                       err_msg=f"{name} of {arch}")


@pytest.mark.parametrize("name", SHIPPED_TABLES)
def test_shipped_rows_are_the_start_of_the_seeded_whole_space_order(name):
    """A table was filled by `stage.limit=15625` (the seeded shuffle of the space, seed 0) in order, so its
    rows are that shuffle's first N: sampling still draws the architectures it drew when they were computed."""
    settings, table = shipped_table(name)
    assert set(table.rows) == set(settings.create_space().sample_distinct(len(table.rows), settings.seed))


def test_the_shipped_nb201_tables_hold_every_metric_on_the_whole_space():
    """Every registered metric has a column of all 15,625 architectures in one of the shipped NB201 tables, and
    no table has a column that only some of its rows hold: full-space correlations read these columns."""
    covered = set()
    for name in SHIPPED_TABLES:
        settings, table = shipped_table(name)
        if settings.space != "nb201":
            continue
        columns = [set(row["metrics"]) for row in table.rows.values()]
        every, some = set.intersection(*columns), set.union(*columns)
        assert len(table.rows) == 15_625, f"{name}: {len(table.rows)} rows"
        assert every == some, f"{name}: {sorted(some - every)} only in some rows"
        covered |= every
    assert set(list_metrics()) <= covered, f"no whole-space column of {sorted(set(list_metrics()) - covered)}"


def test_shipped_rows_file_is_byte_reproducible(tmp_path):
    """`ship` writes the same bytes from the same rows (no timestamp in the gzip header)."""
    from hnas.metric_table import ship

    folder = tmp_path / REFERENCE_TABLE
    folder.mkdir()
    shutil.copy(SHIPPED / REFERENCE_TABLE / "meta.json", folder)
    with gzip.open(SHIPPED / REFERENCE_TABLE / "rows.jsonl.gz") as f:
        (folder / "rows.jsonl").write_bytes(f.read())
    again = ship(folder, tmp_path / "shipped")
    assert (again / "rows.jsonl.gz").read_bytes() == (SHIPPED / REFERENCE_TABLE / "rows.jsonl.gz").read_bytes()


def test_shipping_new_rows_keeps_the_rows_already_shipped(tmp_path):
    """A results folder holding only new rows (as on a fresh machine) adds them to the shipped table."""
    from hnas.metric_table import ship

    with gzip.open(SHIPPED / REFERENCE_TABLE / "rows.jsonl.gz") as f:
        lines = f.read().splitlines(keepends=True)
    shipped_root, folder = tmp_path / "shipped", tmp_path / "results" / REFERENCE_TABLE
    for where, part in ((shipped_root / REFERENCE_TABLE, lines[:5]), (folder, lines[3:8])):
        where.mkdir(parents=True)
        shutil.copy(SHIPPED / REFERENCE_TABLE / "meta.json", where)
        (where / "rows.jsonl").write_bytes(b"".join(part))
    ship(shipped_root / REFERENCE_TABLE, shipped_root)  # turn the first layer into a shipped rows.jsonl.gz
    (shipped_root / REFERENCE_TABLE / "rows.jsonl").unlink()
    merged = ship(folder, shipped_root)
    with gzip.open(merged / "rows.jsonl.gz") as f:
        assert f.read().splitlines(keepends=True) == lines[:8]  # shipped first, overlapping rows once


def test_shipping_rows_of_another_meta_is_refused(tmp_path):
    from hnas.metric_table import ship

    folder = tmp_path / "results" / REFERENCE_TABLE
    folder.mkdir(parents=True)
    meta = json.loads((SHIPPED / REFERENCE_TABLE / "meta.json").read_text())
    meta["torch_threads"] = 16
    (folder / "meta.json").write_text(json.dumps(meta))
    shipped_root = tmp_path / "shipped"
    shutil.copytree(SHIPPED / REFERENCE_TABLE, shipped_root / REFERENCE_TABLE)
    with pytest.raises(HnasError, match="differs from the shipped one .* in torch_threads"):
        ship(folder, shipped_root)
