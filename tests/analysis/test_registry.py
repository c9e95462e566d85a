"""Weight files are loaded only when their sha256 and version match the metadata."""

from __future__ import annotations

import json
from datetime import date

import pytest
import torch

from analysis.nets.architectures import build_network, lung_architecture
from analysis.nets.registry import (
    ModelFileError,
    WeightMetadata,
    available_models,
    load_weights,
    save_weights,
    sha256_of,
)


def _metadata(name: str = "lungs-test", version: str = "1.0") -> WeightMetadata:
    return WeightMetadata(
        name=name,
        version=version,
        stage="lungs",
        architecture=lung_architecture(width=4),
        classes=["background", "right", "left"],
        input={"size": 64, "window": [-1000.0, 250.0]},
        training_data=["phantom:2"],
        date="2026-11-23",
        metrics={"val_dice": 0.5},
    )


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    net = build_network(lung_architecture(width=4))
    metadata = save_weights(net.state_dict(), _metadata(), tmp_path)
    return tmp_path, net, metadata


def test_saved_weights_load_back_with_their_sha256_and_model_info(saved):
    directory, net, metadata = saved
    assert metadata.sha256 == sha256_of(directory / "lungs-test.pt")
    loaded = load_weights("lungs-test", directory, version="1.0")
    info = loaded.model_info
    assert (info.stage, info.name, info.version, info.sha256, info.kind) == (
        "lungs",
        "lungs-test",
        "1.0",
        metadata.sha256,
        "network",
    )
    # Stored as fp16, loaded back as float32 within fp16 precision.
    for key, value in net.state_dict().items():
        assert loaded.state_dict[key].dtype == value.dtype
        torch.testing.assert_close(loaded.state_dict[key], value, atol=1e-3, rtol=1e-3)
    assert json.loads((directory / "lungs-test.json").read_text())["metrics"] == {"val_dice": 0.5}


def test_tampered_weight_file_is_refused(saved):
    directory, _, _ = saved
    path = directory / "lungs-test.pt"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"sha256 of lungs-test\.pt"):
        load_weights("lungs-test", directory)


def test_weights_swapped_under_metadata_are_refused(saved, tmp_path_factory):
    directory, _, _ = saved
    other = tmp_path_factory.mktemp("other")
    torch.manual_seed(1)
    save_weights(build_network(lung_architecture(width=4)).state_dict(), _metadata(), other)
    (directory / "lungs-test.pt").write_bytes((other / "lungs-test.pt").read_bytes())
    with pytest.raises(ModelFileError, match="altered"):
        load_weights("lungs-test", directory)


def test_other_version_is_refused(saved):
    directory, _, _ = saved
    with pytest.raises(ModelFileError, match=r"version 1.0, but this code expects 2.0"):
        load_weights("lungs-test", directory, version="2.0")


def test_missing_files_are_named(tmp_path, saved):
    with pytest.raises(ModelFileError, match=r"lungs-none\.json is missing"):
        load_weights("lungs-none", tmp_path)
    directory, _, _ = saved
    (directory / "lungs-test.pt").unlink()
    with pytest.raises(ModelFileError, match=r"lungs-test\.pt is not in"):
        load_weights("lungs-test", directory)


def test_invalid_names_cannot_escape_the_directory(tmp_path):
    with pytest.raises(ModelFileError, match="not a valid model name"):
        load_weights("../secrets", tmp_path)


def test_available_models_lists_complete_pairs(saved):
    directory, _, _ = saved
    (directory / "orphan.json").write_text("{}")
    assert [m.name for m in available_models(directory)] == ["lungs-test"]


def test_shipped_weights_verify_and_stay_small():
    from analysis.nets.architectures import EXPECTED_VERSIONS
    from analysis.nets.registry import WEIGHTS_DIR

    shipped = {m.name: m for m in available_models()}
    assert set(shipped) == set(EXPECTED_VERSIONS)
    for name, version in EXPECTED_VERSIONS.items():
        loaded = load_weights(name, version=version)  # sha256 checked
        assert loaded.metadata.training_data
        assert loaded.metadata.metrics
        assert date.fromisoformat(loaded.metadata.date) <= date.today()
    total = sum(p.stat().st_size for p in WEIGHTS_DIR.glob("*.pt"))
    assert total < 30 * 1024 * 1024
