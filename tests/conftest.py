import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The shared data folder (real CIFAR-10 images, benchmark fixtures) when HNAS_DATA_DIR names it, as .ci/run
# does. Without it the suite runs on what hnas ships and generates; tests that need the data are skipped.
DATA = Path(os.environ.get("HNAS_DATA_DIR", REPO / "data")).resolve()
HAVE_DATA = (DATA / "cifar10-test-jpg").is_dir() and (DATA / "nb201" / "nb201.csv").is_file()
needs_data = pytest.mark.skipif(
    not HAVE_DATA, reason=f"needs the shared data folder (real CIFAR-10 images, benchmark files); {DATA} has "
    "none: run with HNAS_DATA_DIR=../shared/data, as .ci/run does")


@pytest.fixture
def data_dir():
    return DATA


@pytest.fixture(autouse=True)
def results_dir(tmp_path, monkeypatch):
    """Every test writes metric tables into its own folder, never into the (read-only) data folder."""
    path = tmp_path / "results"
    monkeypatch.setenv("HNAS_RESULTS_DIR", str(path))
    return path


def compose(*overrides):
    """The config `python run.py <overrides>` would run with, composed in-process."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from hnas.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def configure(*overrides):
    """The typed config (hnas.config.validate) a stage gets from `python run.py <overrides>`."""
    from hnas.config import validate

    return validate(compose(*overrides))


def benchmark_text():
    """The text of the NB201 benchmark table in use: the data folder's nb201.csv, else the shipped copy."""
    import gzip

    from hnas.benchmarks.nb201 import default_path

    path = default_path()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as f:
        return f.read()
