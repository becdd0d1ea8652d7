"""HNAS in the DARTS space: the pool, its metric values, the training oracle, and a search that survives
kill -9 (issue 14). Everything runs on the fake dataset with a tiny query protocol, so it needs no data."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import REPO, configure
from hnas.errors import HnasError
from hnas.spaces import create_space

# What a CPU check can afford: a pool of 20, queries of 1 epoch on 200 images with C=4 networks.
TINY = ["experiment=hnas_darts", "dataset=fake", "query=cifar10", "search.n_sample=20", "query.epochs=1",
        "query.subset=400", "query.init_channels=4", "query.batch_size=64", "query.workers=0",
        "space.init_channels=4", "device=cpu"]


def run_cli(results, folder, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HNAS_RESULTS_DIR": str(results)}
    return subprocess.Popen([sys.executable, "run.py", *TINY, *extra, f"hydra.run.dir={folder}"], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(proc):
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return err


def queries(folder):
    with open(folder / "queries.csv") as f:
        return list(csv.DictReader(f))


def query_log(results):
    [log] = (results / "query-tables").glob("*/queries.jsonl")
    return [json.loads(line) for line in log.read_text().splitlines()]


# ---- the search, killed and resumed -------------------------------------------------------------------------

def test_a_search_killed_mid_query_resumes_to_the_same_choice_without_training_anything_twice(tmp_path):
    queries_n = 10  # of HNAS's 25: enough for a kill after 5 and a rerun that trains the rest
    small = (f"search.queries={queries_n}",)
    whole = run_cli(tmp_path / "results-whole", tmp_path / "whole", *small)
    killed_results = tmp_path / "results-killed"
    proc = run_cli(killed_results, tmp_path / "killed", *small)
    runs = killed_results / "query-tables"
    deadline = time.time() + 600
    while True:  # kill once 5 queries are logged and a 6th is training (its run folder exists)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline
        logs = list(runs.glob("*/queries.jsonl"))
        done = len(logs[0].read_text().splitlines()) if logs else 0
        started = len(list(runs.glob("*/runs/*/"))) if logs else 0
        if done >= 5 and started > done:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not (tmp_path / "killed" / "result.json").exists()
    before = len(query_log(killed_results))
    assert 5 <= before < queries_n

    finish(run_cli(killed_results, tmp_path / "killed", *small))
    finish(whole)
    a, b = (json.loads((tmp_path / run / "result.json").read_text()) for run in ("whole", "killed"))
    assert a["arch"] == b["arch"] and a["val_acc"] == b["val_acc"] and a["n_queries"] == b["n_queries"] == queries_n
    assert b["query"]["trained_now"] == queries_n - before  # the rerun trained only what the log lacked
    same = ("step", "arch", "t", "c", "score", "val_acc", "best_arch", "best_val_acc")
    assert [{k: r[k] for k in same} for r in queries(tmp_path / "whole")] == \
           [{k: r[k] for k in same} for r in queries(tmp_path / "killed")]
    trained = [r["arch"] for r in query_log(killed_results)]
    assert len(trained) == len(set(trained)) == queries_n  # each queried architecture trained and logged once
    assert [r["arch"] for r in queries(tmp_path / "killed")] == trained  # in query order
    # The query's cost is its measured training time, recorded once and read back on the rerun.
    assert [float(r["cost_s"]) for r in queries(tmp_path / "killed")] == [r["cost_s"] for r in query_log(killed_results)]
    assert all(r["cost_s"] > 0 and r["epochs"] == 1 and r["train_images"] == r["eval_images"] == 200
               for r in query_log(killed_results))
    assert list((tmp_path / "killed" / "tb").glob("events.out.tfevents.*"))


# ---- the pool ------------------------------------------------------------------------------------------------

def test_the_pool_is_the_reference_draw_order_and_its_metrics_go_to_a_metric_table(tmp_path, monkeypatch):
    from hnas.stages import search as stage

    monkeypatch.setenv("HNAS_RESULTS_DIR", str(tmp_path / "results"))
    cfg = configure(*TINY, "search.queries=2", "seed=3")
    asked = []
    from hnas.metric_source import MetricSource

    original = MetricSource.__call__
    monkeypatch.setattr(MetricSource, "__call__", lambda self, archs: asked.append(list(archs)) or original(self, archs))
    result = stage.run(cfg, tmp_path / "run", tensorboard=False)
    space = create_space("darts", init_channels=4)
    # One call, for the whole pool, before the first query: the first 20 distinct draws of seed 3.
    assert asked == [space.sample_distinct(20, 3)]
    [table] = (tmp_path / "results" / "metric-tables").glob("darts-*")
    rows = [json.loads(line) for line in (table / "rows.jsonl").read_text().splitlines()]
    assert [r["arch"] for r in rows] == asked[0] and all({"ntk_trace", "condnum"} <= r["metrics"].keys() for r in rows)
    assert result["n_queries"] == 2 and result["arch"] in asked[0]


def test_precompute_fills_the_pool_a_search_with_the_same_seed_reads(tmp_path, monkeypatch):
    from hnas.stages import precompute, search

    monkeypatch.setenv("HNAS_RESULTS_DIR", str(tmp_path))
    common = [*TINY, "seed=1"]
    precompute.run(configure(*common, "stage=precompute", "stage.limit=20", "stage.metrics=[ntk_trace,condnum]"),
                   tmp_path / "pre")
    cfg = configure(*common, "search.queries=1")
    from hnas.metric_source import MetricSource

    monkeypatch.setattr(MetricSource, "_compute_for_search", lambda self, todo: pytest.fail(f"recomputed {len(todo)}"))
    assert search.run(cfg, tmp_path / "run", tensorboard=False)["n_queries"] == 1


# ---- the metric values against the spec's formula --------------------------------------------------------

def plain_ntk(net, images, labels):
    """darts.md 3.1 in plain PyTorch: one backward of the summed true-class logits (train-mode BatchNorm),
    then for every Conv2d / Linear call and image n, the gradient of <B_n, layer(A_n)> with respect to the
    layer's weight (and bias) by autograd on that image alone; Theta = G G^T; M = sqrt(trace / N) and
    K = lambda_max / lambda_min."""
    net.train()
    calls = []

    def record(module, inputs, output):
        a = inputs[0].detach()
        output.register_hook(lambda grad: calls.append((module, a, grad.detach())))

    hooks = [m.register_forward_hook(record) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    logits = net(images)
    logits.gather(1, labels[:, None]).sum().backward()
    for h in hooks:
        h.remove()
    n = len(images)
    per_module = {}
    for module, a, b in calls:
        params = [p for p in (module.weight, module.bias) if p is not None]
        for i in range(n):
            weights = [p.detach().requires_grad_() for p in params]
            bias = weights[1] if len(weights) > 1 else None
            if isinstance(module, nn.Conv2d):
                out = module._conv_forward(a[i:i + 1], weights[0], bias)
            else:
                out = F.linear(a[i:i + 1], weights[0], bias)
            grads = torch.autograd.grad((out * b[i:i + 1]).sum(), weights)
            flat = torch.cat([g.reshape(-1) for g in grads]).double()
            rows = per_module.setdefault(id(module), [torch.zeros_like(flat) for _ in range(n)])
            rows[i] += flat
    g = torch.cat([torch.stack(rows) for rows in per_module.values()], dim=1)
    theta = g @ g.T
    eig = torch.linalg.eigvalsh(theta)
    return math.sqrt(float(theta.trace()) / n), float(eig[-1] / eig[0])


def test_ntk_metrics_of_five_pool_genotypes_equal_the_spec_formula():
    from hnas import data
    from hnas.metrics import compute_metrics

    space = create_space("darts")  # the proxy network HNAS computes on: C=16, 5 cells
    images, labels = data.probe_batch("fake", 16, seed=0)
    for arch in space.sample_distinct(5, seed=0):
        torch.manual_seed(0)
        net = space.build(arch, 10)
        state = {k: v.clone() for k, v in net.state_dict().items()}
        values = compute_metrics(net, images, labels, ["ntk_trace", "condnum"])
        net.load_state_dict(state)  # the BatchNorm statistics the engine's forward updated
        m, k = plain_ntk(net, images, labels)
        assert values["ntk_trace"] == pytest.approx(m, rel=1e-5)
        assert values["condnum"] == pytest.approx(k, rel=1e-3)


# ---- bad input -----------------------------------------------------------------------------------------------

def test_a_dataset_the_metric_network_is_not_for_is_refused():
    with pytest.raises(HnasError, match="space.network=imagenet"):
        configure(*TINY, "dataset=imagenet")
    with pytest.raises(HnasError, match="datasets are cifar10, cifar100, fake, imagenet"):
        configure(*TINY, "dataset=imagenet16_120")


def test_a_search_without_a_query_protocol_or_with_benchmark_query_options_is_refused(tmp_path, monkeypatch):
    from hnas.stages import search as stage

    monkeypatch.setenv("HNAS_RESULTS_DIR", str(tmp_path))
    no_protocol = [a for a in TINY if not a.startswith(("query", "query."))]
    with pytest.raises(HnasError, match="query=<name>"):
        stage.run(configure(*no_protocol), tmp_path / "a", tensorboard=False)
    with pytest.raises(HnasError, match="query.epochs"):
        stage.run(configure(*TINY, "search.query_epochs=12"), tmp_path / "b", tensorboard=False)


def _tiny_oracle():
    """The training oracle of the tiny settings, on the results folder the test's environment names."""
    from hnas.oracles import oracle_for_run

    return oracle_for_run(configure(*TINY, "query.subset=64"))


def test_a_corrupt_query_log_is_an_error_and_a_deleted_record_comes_back_without_training(tmp_path, monkeypatch):
    monkeypatch.setenv("HNAS_RESULTS_DIR", str(tmp_path))
    archs = create_space("darts").sample_distinct(2, seed=0)
    oracle = _tiny_oracle()
    first = [oracle.query(a) for a in archs]
    assert oracle.trained == 2
    log = oracle.table.folder / "queries.jsonl"
    lines = log.read_text().splitlines()
    log.write_text(lines[0] + "\n{not json\n" + lines[1] + "\n")
    with pytest.raises(HnasError, match=r"(?s)line 2 is not a query record.*runs/"):
        _tiny_oracle()
    log.write_text(lines[0] + "\n" + lines[1].replace('"val_acc": ', '"val_acc": 1') + "\n")
    with pytest.raises(HnasError, match="line 2"):
        _tiny_oracle()
    log.write_text(lines[0] + "\n" + lines[1][:20])  # the second record cut short by a kill: dropped
    again = _tiny_oracle()
    assert again.table.get(archs[1]) is None
    outcome = again.query(archs[1])  # rebuilt from its finished checkpoint, not retrained
    assert again.trained == 0 and (outcome.val_acc, outcome.cost_s) == (first[1].val_acc, first[1].cost_s)
    assert len(log.read_text().splitlines()) == 2


def test_a_query_table_of_other_settings_and_a_pool_table_of_other_settings_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("HNAS_RESULTS_DIR", str(tmp_path))
    oracle = _tiny_oracle()
    meta = oracle.table.folder / "meta.json"
    saved = json.loads(meta.read_text())
    saved["settings"]["protocol"]["lr"] = 0.5
    meta.write_text(json.dumps(saved))
    with pytest.raises(HnasError, match="other settings"):
        _tiny_oracle()

    from hnas.metric_table import MetricTable, TableSettings

    settings = TableSettings.from_config(configure(*TINY))
    folder = MetricTable.folder_for(tmp_path, settings)
    folder.mkdir(parents=True)
    other = TableSettings.from_config(configure(*TINY, "dataset=cifar100", "probe.split=train"))
    (folder / "meta.json").write_text(json.dumps({"format": "hnas-metric-table", "version": 3,
                                                  "settings": other.__dict__, "probe": {"sha256": "0" * 64}}))
    with pytest.raises(HnasError, match="settings .* differ"):
        MetricTable.existing(tmp_path, settings)


def test_query_tables_are_keyed_by_dataset_and_protocol(tmp_path, monkeypatch):
    from hnas.query_table import QueryTable

    monkeypatch.setenv("HNAS_RESULTS_DIR", str(tmp_path))
    base = _tiny_oracle().settings
    names = {QueryTable.name_for(base),
             QueryTable.name_for({**base, "dataset": "cifar100"}),
             QueryTable.name_for({**base, "protocol": {**base["protocol"], "epochs": 2}}),
             QueryTable.name_for({**base, "seed": 1})}
    assert len(names) == 4


def test_universe_of_an_unlisted_space_draws_as_the_space_does():
    from hnas.search import Universe

    space = create_space("darts")
    universe = Universe(space)
    assert universe.is_whole
    assert universe.sample(30, np.random.RandomState(4)) == space.sample(30, np.random.RandomState(4))
    distinct = universe.distinct_draws(np.random.RandomState(4))
    assert [next(distinct) for _ in range(30)] == space.sample_distinct(30, 4)


def test_the_baselines_run_on_the_same_oracle_and_share_its_trained_queries(tmp_path, monkeypatch):
    from hnas.stages import search as stage

    monkeypatch.setenv("HNAS_RESULTS_DIR", str(tmp_path / "results"))
    tiny = [a for a in TINY if not a.startswith(("experiment=", "search.n_sample"))]
    results = {}
    for preset, extra in (("random_darts", []), ("rea_darts", []), ("training_free_darts", ["search.candidates=20"])):
        cfg = configure(f"experiment={preset}", *tiny, "search.queries=3", *extra)
        results[preset] = stage.run(cfg, tmp_path / preset, tensorboard=False)
    assert all(r["n_queries"] == 3 and r["query"]["oracle"] == "train" for r in results.values())
    assert results["random_darts"]["query"]["trained_now"] == 3
    # REA's population starts with the same seeded draws as random search: those come from the table.
    assert results["rea_darts"]["query"]["trained_now"] == 0
    trained = [r["arch"] for r in query_log(tmp_path / "results")]
    assert len(trained) == len(set(trained)) == 3 + results["training_free_darts"]["query"]["trained_now"]
    pool = create_space("darts", init_channels=4).sample_distinct(20, 0)
    assert results["training_free_darts"]["arch"] in pool
