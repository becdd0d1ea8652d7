"""stage=train: schedules, augmentation, the architecture's source, learning, checkpoints that resume
bitwise exactly, and errors."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

from conftest import REPO, configure
from hnas.errors import HnasError
from hnas.spaces import create_space
from hnas.train import checkpoint
from hnas.train.data import NORMALISATION, Cutout, eval_transform, train_transform
from hnas.train.schedule import lr_at

ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
# A network and data small enough for a step to take milliseconds on one core.
TINY = ["stage=train", f'stage.arch="{ARCH}"', "space=nb201", "dataset=fake", "device=cpu", "train.auxiliary=false",
        "train.init_channels=8", "train.layers=1", "train.batch_size=16", "train.workers=0"]


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as in the subprocesses (OMP_NUM_THREADS=1): on a busy two-core machine two threads
    make these tiny networks many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def protocol(name, *overrides):
    return configure("stage=train", f"train={name}", *overrides).train


def run_cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same threads in every run, so floats add up the same
    return subprocess.Popen([sys.executable, "run.py", *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def finish(proc):
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]


def metrics(folder):
    with open(folder / "metrics.csv") as f:
        return list(csv.DictReader(f))


def weights(folder):
    return torch.load(folder / checkpoint.FILE, weights_only=True)["model"]


# ---- schedules (darts.md 5.1-5.3) ---------------------------------------------------------------------------

def test_hnas_cifar_cosine_steps_after_each_epoch_as_torch_does():
    cfg = protocol("darts_cifar10")
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.025)
    torch_cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=600, eta_min=0.0)
    for epoch in range(600):
        assert lr_at(cfg, epoch) == pytest.approx(torch_cosine.get_last_lr()[0], rel=1e-9, abs=1e-15)
        optimizer.step()
        torch_cosine.step()
    assert lr_at(cfg, 0) == 0.025 and lr_at(cfg, 300) == pytest.approx(0.0125)
    c100 = protocol("darts_cifar100")
    assert (c100.lr, c100.lr_min, c100.auxiliary_weight, c100.drop_path_prob) == (0.035, 0.001, 0.6, 0.3)
    assert lr_at(c100, 0) == 0.035 and lr_at(c100, 599) > 0.001


def test_original_darts_steps_its_scheduler_before_each_epoch():
    cifar = protocol("darts_cifar10_original")
    assert lr_at(cifar, 0) == pytest.approx(0.025 * (1 + math.cos(math.pi / 600)) / 2)
    assert lr_at(cifar, 599) == pytest.approx(0.0, abs=1e-15)  # the last epoch trains at lr 0
    imagenet = protocol("darts_imagenet_original")
    assert [lr_at(imagenet, e) for e in (0, 1, 249)] == pytest.approx([0.1 * 0.97, 0.1 * 0.97 ** 2, 0.1 * 0.97 ** 250])


def test_hnas_imagenet_warms_up_then_decays_linearly():
    cfg = protocol("darts_imagenet")
    assert (cfg.batch_size, cfg.label_smoothing, cfg.weight_decay, cfg.epochs) == (1024, 0.1, 3e-5, 250)
    assert (cfg.init_channels, cfg.layers, cfg.auxiliary, cfg.drop_path_prob, cfg.grad_clip) == (48, 14, True, 0.0, 5)
    assert [lr_at(cfg, e) for e in range(5)] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert lr_at(cfg, 5) == pytest.approx(0.5 * 240 / 245)
    assert lr_at(cfg, 244) == pytest.approx(0.5 / 245)
    assert [lr_at(cfg, e) for e in range(245, 250)] == pytest.approx([0.5 * (250 - e) / (245 * 5) for e in range(245, 250)])
    # the tail starts where the first slope ends: epochs 244 and 245 share a rate, as in HNAS
    assert lr_at(cfg, 245) == pytest.approx(lr_at(cfg, 244))
    assert all(lr_at(cfg, e) > lr_at(cfg, e + 1) for e in [*range(5, 244), *range(245, 249)])


def test_bad_protocol_values_are_named():
    with pytest.raises(HnasError, match="train.lr_min"):
        protocol("darts_cifar10", "train.lr_min=1.0")
    with pytest.raises(HnasError, match="linear schedule"):
        protocol("darts_imagenet", "train.epochs=5")
    with pytest.raises(HnasError, match="not both"):
        configure(*TINY, "stage.from_result=/tmp")


# ---- augmentation ------------------------------------------------------------------------------------------

def test_cutout_zeroes_a_square_clipped_at_the_border():
    torch.manual_seed(0)
    sizes = set()
    for _ in range(200):
        out = Cutout(16)(torch.ones(3, 32, 32))
        zero = (out == 0).all(dim=0)
        rows, cols = zero.any(dim=1).nonzero().flatten(), zero.any(dim=0).nonzero().flatten()
        assert int(zero.sum()) == len(rows) * len(cols)  # one axis-aligned rectangle
        assert len(rows) <= 16 and len(cols) <= 16
        sizes.add(int(zero.sum()))
    assert 256 in sizes and min(sizes) < 256  # whole squares inside, smaller ones at the borders


def test_train_transform_normalises_before_cutout_and_test_transform_only_normalises():
    image = Image.new("RGB", (32, 32), (255, 0, 128))
    mean, std = NORMALISATION["cifar10"]
    expected = torch.tensor([(c / 255 - m) / s for c, m, s in zip((255, 0, 128), mean, std)])
    assert torch.allclose(eval_transform("cifar10")(image)[:, 5, 5], expected, atol=1e-6)
    torch.manual_seed(1)
    out = train_transform("cifar10", cutout=16)(image)
    assert out.shape == (3, 32, 32)
    values = {tuple(v) for v in out.flatten(1).T.tolist()}
    # the colour (normalised), zero padding of the crop (normalised: -mean/std) and Cutout's exact zeros
    assert (0.0, 0.0, 0.0) in values and len(values) <= 3
    assert train_transform("imagenet")(Image.new("RGB", (300, 280))).shape == (3, 224, 224)
    assert eval_transform("imagenet")(Image.new("RGB", (300, 280))).shape == (3, 224, 224)


# ---- the architecture ----------------------------------------------------------------------------------------

def test_architecture_from_a_search_result(tmp_path):
    from hnas.stages.train import resolve_arch

    space = create_space("nb201")
    (tmp_path / "result.json").write_text(json.dumps({"arch": ARCH, "space": "nb201"}))
    stage = configure("stage=train", f"stage.from_result={tmp_path}").stage
    assert resolve_arch(stage, space) == ARCH
    stage.from_result = str(tmp_path / "result.json")
    assert resolve_arch(stage, space) == ARCH
    (tmp_path / "result.json").write_text(json.dumps({"arch": ARCH, "space": "darts"}))
    with pytest.raises(HnasError, match="space=darts"):
        resolve_arch(stage, space)
    (tmp_path / "result.json").write_text("{not json")
    with pytest.raises(HnasError, match="cannot read"):
        resolve_arch(stage, space)
    stage.from_result = str(tmp_path / "missing")
    with pytest.raises(HnasError, match="cannot read"):
        resolve_arch(stage, space)
    with pytest.raises(HnasError, match="needs an architecture"):
        resolve_arch(configure("stage=train").stage, space)
    with pytest.raises(HnasError, match="malformed NB201"):
        configure("stage=train", 'stage.arch="|bad~0|"')


def test_nb201_builds_the_configured_network_without_an_auxiliary_head():
    space = create_space("nb201")
    net = space.build_for_training(ARCH, 100, init_channels=8, layers=2, auxiliary=False, input_size=32)
    assert net.classifier.in_features == 32 and net.classifier.out_features == 100
    assert len(net.cells) == 3 * 2 + 2
    with pytest.raises(HnasError, match="train.auxiliary=false"):
        space.build_for_training(ARCH, 10, init_channels=8, layers=2, auxiliary=True, input_size=32)


# ---- training ------------------------------------------------------------------------------------------------

def test_training_fits_a_small_fixed_subset(tmp_path):
    from hnas.stages import train as stage

    cfg = configure(*TINY, "train.init_channels=16", "train.subset=32", "train.epochs=20", "train.lr=0.05",
                    "train.cutout=null", "train.drop_path_prob=0")
    result = stage.run(cfg, tmp_path)
    rows = metrics(tmp_path)
    assert [int(r["epoch"]) for r in rows] == list(range(1, 21)) and rows[0]["train_images"] == "32"
    first, last = rows[:3], rows[-3:]
    assert min(float(r["train_top1"]) for r in last) > 25  # chance is 10 %
    assert max(float(r["train_loss"]) for r in last) < min(float(r["train_loss"]) for r in first) - 0.2
    assert float(rows[0]["lr"]) == 0.05 and float(rows[-1]["lr"]) < 0.001
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["test_top1"] == pytest.approx(float(rows[-1]["test_top1"])) == pytest.approx(result["test_top1"])
    assert saved["protocol"] == "darts_cifar10" and saved["world_size"] == 1 and saved["epochs"] == 20
    net = create_space("nb201").build_for_training(ARCH, 10, init_channels=16, layers=1, auxiliary=False, input_size=32)
    assert saved["params_m"] == pytest.approx(sum(p.numel() for p in net.parameters()) / 1e6)
    assert saved["macs"] > 0 and saved["images_per_s"] > 0
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_missing_training_images_name_the_folder_and_the_download(tmp_path, monkeypatch):
    from hnas.stages import train as stage

    monkeypatch.setenv("HNAS_DATA_DIR", str(tmp_path))
    cfg = configure(*TINY, "dataset=cifar10")
    with pytest.raises(HnasError) as error:
        stage.run(cfg, tmp_path / "run")
    assert str(tmp_path / "cifar10" / "cifar-10-batches-py") in str(error.value)
    assert "download" in str(error.value)


def test_missing_imagenet_names_its_class_folders(tmp_path):
    from hnas import data

    with pytest.raises(HnasError) as error:
        data.load_dataset("imagenet", "test", data_dir=tmp_path)
    assert str(tmp_path / "imagenet" / "val") in str(error.value) and "ILSVRC-2012" in str(error.value)


def test_batch_must_divide_among_processes():
    from hnas.train.data import per_process_batch

    assert per_process_batch(1024, 8) == 128
    with pytest.raises(HnasError, match="multiple of 8"):
        per_process_batch(100, 8)


def _kill_after_epoch_1(folder, overrides):
    proc = run_cli(*overrides, f"hydra.run.dir={folder}")
    deadline = time.time() + 300
    while not (folder / checkpoint.FILE).exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not (folder / "result.json").exists()
    return len(torch.load(folder / checkpoint.FILE, weights_only=True)["history"])


HAVE_DARTS = "darts" in __import__("hnas.spaces", fromlist=["list_spaces"]).list_spaces()
# with DARTS: drop path and the auxiliary head draw and train too
DARTS = ["space=darts", "stage.arch=DARTS_V2", "train.init_channels=8", "train.layers=5", "train.auxiliary=true"]


@pytest.mark.parametrize("extra", [["train.workers=0"], ["train.workers=2"],
                                   pytest.param(DARTS, marks=pytest.mark.skipif(not HAVE_DARTS, reason="no DARTS space"))],
                         ids=["workers0", "workers2", "darts"])
def test_a_killed_run_resumes_to_bitwise_the_same_weights(tmp_path, extra):
    overrides = [*TINY, "train.epochs=3", "train.subset=128", *extra]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    reference = run_cli(*overrides, f"hydra.run.dir={whole}")
    done = _kill_after_epoch_1(killed, overrides)
    finish(reference)
    assert done in (1, 2)  # killed in epoch 2 or 3, before the end
    finish(run_cli(*overrides, f"hydra.run.dir={killed}"))
    a, b = weights(whole), weights(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert metrics(whole) == [{**r, "seconds": w["seconds"], "images_per_s": w["images_per_s"]}
                              for r, w in zip(metrics(killed), metrics(whole))]


def test_a_finished_run_reruns_without_training_and_other_settings_cannot_resume(tmp_path):
    from hnas.stages import train as stage

    quick = [*TINY, "train.epochs=1", "train.subset=32", "train.steps_per_epoch=1"]
    first = stage.run(configure(*quick), tmp_path)
    assert metrics(tmp_path)[0]["train_images"] == "16" and metrics(tmp_path)[0]["test_images"] == "32"
    mtime = (tmp_path / checkpoint.FILE).stat().st_mtime_ns
    again = stage.run(configure(*quick), tmp_path)
    assert again["test_top1"] == first["test_top1"] and (tmp_path / checkpoint.FILE).stat().st_mtime_ns == mtime
    with pytest.raises(HnasError, match="train.lr: 0.025 in the checkpoint, 0.1 now"):
        stage.run(configure(*quick, "train.lr=0.1"), tmp_path)


def test_torchrun_trains_on_two_cpu_processes(tmp_path):
    # --standalone: a rendezvous on a free local port
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "run.py", *TINY,
         "train.epochs=2", "train.subset=64", f"hydra.run.dir={tmp_path}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both of its processes
    assert proc.returncode == 0, err[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["world_size"] == 2 and result["device"] == "cpu"
    rows = metrics(tmp_path)
    assert len(rows) == 2 and all(r["train_images"] == r["test_images"] == "64" for r in rows)  # summed over both
    saved = torch.load(tmp_path / checkpoint.FILE, weights_only=True)
    assert saved["world_size"] == 2 and len(saved["rng"]) == 2  # both processes' generators, for a resume
    assert not torch.equal(saved["rng"][0]["torch"], saved["rng"][1]["torch"])
    assert (out + err).count("trained |") == 1  # rank 0 alone logs


@pytest.mark.slow
def test_data_loader_workers_run_under_the_joblib_launcher(tmp_path):
    proc = subprocess.run(
        [sys.executable, "run.py", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1", *TINY,
         "train.epochs=1", "train.subset=32", "train.workers=2", f"hydra.sweep.dir={tmp_path}",
         "hydra.sweep.subdir=${hydra.job.num}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [json.loads((tmp_path / job / "result.json").read_text())["seed"] for job in ("0", "1")] == [0, 1]


@pytest.mark.skipif(not HAVE_DARTS, reason="the DARTS space is not registered")
def test_a_darts_network_trains_with_its_auxiliary_head_and_drop_path(tmp_path, monkeypatch):
    from hnas.spaces import SPACES
    from hnas.stages import train as stage

    built = []
    space_class = SPACES.get("darts")
    original = space_class.build_for_training
    monkeypatch.setattr(space_class, "build_for_training",
                        lambda self, *args, **kw: built.append(original(self, *args, **kw)) or built[-1])
    cfg = configure("stage=train", "space=darts", "stage.arch=DARTS_V2", "train.init_channels=8", "train.layers=5",
                    "dataset=fake", "device=cpu", "train.epochs=2", "train.subset=16", "train.batch_size=8",
                    "train.workers=0")
    assert cfg.train.auxiliary and cfg.train.drop_path_prob == 0.2
    initial = {k: v.clone() for k, v in original(create_space("darts"), "DARTS_V2", 10, init_channels=8, layers=5,
                                                  auxiliary=True, input_size=32).state_dict().items()}
    result = stage.run(cfg, tmp_path)
    [model] = built
    assert model.drop_path_prob == pytest.approx(0.2 * 1 / 2)  # p * epoch / epochs, set at the last epoch
    trained = torch.load(tmp_path / checkpoint.FILE, weights_only=True)["model"]
    aux = [k for k in trained if "auxiliary" in k and k.endswith("weight")]
    assert aux and all(not torch.equal(trained[k], initial[k]) for k in aux)  # the auxiliary loss trained it
    assert result["params_m"] == pytest.approx(
        sum(v.numel() for k, v in model.named_parameters() if "auxiliary" not in k) / 1e6)
    assert result["params_m"] < sum(v.numel() for v in model.parameters()) / 1e6
