import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Tests read the real data beside the checkout unless HNAS_DATA_DIR points elsewhere.
os.environ.setdefault("HNAS_DATA_DIR", str(REPO.parent / "shared" / "data"))
DATA = Path(os.environ["HNAS_DATA_DIR"]).resolve()


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
