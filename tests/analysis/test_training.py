"""Dataset readers, lesion synthesis and the training loop on tiny data (a few slices, a few steps)."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from django.core.management import call_command
from django.core.management.base import CommandError
from PIL import Image

from analysis.nets.registry import load_weights
from analysis.phantoms import LesionKind, LesionSpec, PhantomSpec, Severity, Side, make_phantom, random_spec
from analysis.pipeline.volume import write_dicom_series
from analysis.training.datasets import (
    Case,
    DatasetError,
    build_slice_set,
    estimate_hu,
    fold_indices,
    load_slice_set,
    parse_spec,
    read_dicom_case,
    read_medseg2d,
    read_nifti_cases,
    save_slice_set,
    split_validation,
)
from analysis.training.lesions import CONSOLIDATION, GGO, LesionStyle, insert_lesions
from analysis.training.trainer import (
    TrainConfig,
    auc,
    calibrate_logit_offset,
    lesions_through_slab,
    make_batch,
    paste_lesions,
    resolve_device,
    train_network,
)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(random_spec(11, Severity.SEVERE), slice_thickness_mm=10.0, pixel_spacing_mm=2.0, matrix=192)


@pytest.fixture(scope="module")
def phantom_case(phantom):
    inf = phantom.infection
    return Case(
        name="phantom:11",
        volume=phantom.volume,
        lungs=phantom.lungs,
        infection=inf,
        slice_labels=inf.reshape(len(inf), -1).any(1).astype(np.int8),
    )


@pytest.fixture(scope="module")
def host_case(phantom):
    """The phantom's lungs without lesions, as a host for synthetic lesions."""
    normal = make_phantom(random_spec(12, Severity.NORMAL), slice_thickness_mm=10.0, pixel_spacing_mm=2.0, matrix=192)
    return Case(
        name="host:12",
        volume=normal.volume,
        lungs=normal.lungs,
        host=True,
        slice_labels=np.zeros(normal.volume.shape[0], np.int8),
    )


# --- specs and readers ---------------------------------------------------------------------------


def test_specs_parse_and_bad_specs_say_why():
    spec = parse_spec("medseg2d:/data/slices,fold=2/5,test")
    assert (spec.kind, spec.args, spec.options) == ("medseg2d", ("/data/slices",), {"fold": "2/5", "part": "test"})
    assert parse_spec("dicomlabels:/a,/a.csv").args == ("/a", "/a.csv")
    for bad, reason in [
        ("images", "KIND:ARGS"),
        ("phantom:x", "number"),
        ("dicomlabels:/a", "2..2"),
        ("medseg2d:/a,fold=2", "K/N"),
        ("zip:/a", "KIND:ARGS"),
    ]:
        with pytest.raises(DatasetError, match=reason):
            parse_spec(bad)


def test_folds_partition_the_items():
    tests = [fold_indices(50, k, 5) for k in range(5)]
    assert sorted(np.concatenate(tests).tolist()) == list(range(50))
    assert all(len(t) == 10 for t in tests)


def test_estimate_hu_maps_lung_and_soft_tissue_peaks():
    rng = np.random.default_rng(0)
    image = np.concatenate([rng.normal(45, 4, 3000), rng.normal(200, 4, 2000), np.zeros(200)]).clip(0, 255)
    hu = estimate_hu(image.astype(np.uint8).reshape(1, -1))
    assert np.median(hu[0, :3000]) == pytest.approx(-850, abs=40)
    assert np.median(hu[0, 3000:5000]) == pytest.approx(40, abs=40)


def _write_medseg(folder, n=5):
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        image = rng.normal(45, 5, (40 + i, 50)).clip(0, 255)
        image[:10] = 205
        mask = np.zeros(image.shape, np.uint8)
        mask[20:25, 20:30] = 1 + i % 2
        Image.fromarray(image.astype(np.uint8)).save(folder / "images" / f"{i}.jpg")
        Image.fromarray(mask).save(folder / "masks" / f"{i}.png")


def test_medseg_reader_pairs_images_and_masks_and_splits_folds(tmp_path):
    _write_medseg(tmp_path)
    planes = read_medseg2d(tmp_path / "images", tmp_path / "masks")
    assert planes.ids == ["0", "1", "2", "3", "4"]
    assert planes.images[1].shape == (41, 50)
    assert set(np.unique(planes.masks[1])) == {0, 2}
    train = read_medseg2d(tmp_path / "images", tmp_path / "masks", fold=(0, 5), part="train")
    test = read_medseg2d(tmp_path / "images", tmp_path / "masks", fold=(0, 5), part="test")
    assert len(train.ids) == 4
    assert len(test.ids) == 1
    assert not set(train.ids) & set(test.ids)
    data = build_slice_set([planes], "infection")
    assert data.images.shape == (5, 256, 256)
    assert data.free_orientation.all()
    assert (data.abnormal == 1).all()
    with pytest.raises(DatasetError, match="no training samples"):
        build_slice_set([planes], "lungs")  # MedSeg slices have no lung masks


def test_a_saved_slice_set_loads_back_and_a_wrong_file_is_named(tmp_path, host_case, phantom_case):
    data = build_slice_set([host_case, phantom_case], "infection")
    save_slice_set(tmp_path / "set.npz", data)
    back = load_slice_set(tmp_path / "set.npz")
    assert np.abs(back.images - data.images).max() <= 0.5  # HU are stored whole
    for name in ("labels", "lungs", "abnormal", "synthesize", "pixel_mm", "free_orientation", "z", "slice_mm"):
        np.testing.assert_array_equal(getattr(back, name), getattr(data, name), err_msg=name)
    assert back.groups == data.groups
    np.savez(tmp_path / "other.npz", images=data.images)
    with pytest.raises(DatasetError, match="not a slice-set file, missing abnormal, free_orientation"):
        load_slice_set(tmp_path / "other.npz")
    (tmp_path / "text.npz").write_text("not numpy")
    with pytest.raises(DatasetError, match=r"text\.npz: not a readable slice-set file"):
        load_slice_set(tmp_path / "text.npz")


def test_nifti_reader_reads_the_ma_et_al_layout(tmp_path, phantom):
    import SimpleITK as sitk

    for sub in ("COVID-19-CT-Seg_20cases", "Infection_Mask", "Lung_Mask"):
        (tmp_path / sub).mkdir()
    volume = phantom.volume

    def write(array, sub):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(tuple(reversed(volume.spacing)))
        sitk.WriteImage(image, str(tmp_path / sub / "case_1.nii.gz"))

    write(volume.hu, "COVID-19-CT-Seg_20cases")
    write((phantom.infection > 0).astype(np.uint8), "Infection_Mask")
    # The source's lung values are swapped on purpose (3 right, 4 left): sides come from position.
    write(np.where(phantom.lungs == 1, 3, np.where(phantom.lungs == 2, 4, 0)).astype(np.uint8), "Lung_Mask")
    [case] = read_nifti_cases(tmp_path)
    assert (case.lungs == phantom.lungs).mean() > 0.999
    assert ((case.infection > 0) == (phantom.infection > 0)).all()
    dense = case.infection == CONSOLIDATION
    assert (volume.hu[dense] > -300).all()


def test_dicom_host_uses_only_slices_labelled_normal(tmp_path):
    lesion = LesionSpec(
        kind=LesionKind.CONSOLIDATION,
        radius_mm=20.0,
        hu=0.0,
        lung=Side.RIGHT,
        height_frac=0.3,
        angle_deg=90.0,
        depth_frac=0.9,
    )
    phantom = make_phantom(
        PhantomSpec(seed=4, lesions=(lesion,)), slice_thickness_mm=10.0, pixel_spacing_mm=2.0, matrix=192
    )
    paths = write_dicom_series(phantom.volume, tmp_path / "series", patient_id="P-train")

    infected = phantom.infection.reshape(len(phantom.infection), -1).any(1)
    _write_slice_labels(paths, infected, tmp_path / "labels.csv")
    case = read_dicom_case(tmp_path / "series", tmp_path / "labels.csv", host=True, cache_dir=tmp_path / "cache")
    assert (case.slice_labels == infected).all()
    cached = read_dicom_case(tmp_path / "series", tmp_path / "labels.csv", host=True, cache_dir=tmp_path / "cache")
    assert (cached.lungs == case.lungs).all()
    assert 0 < infected.sum() < len(infected) - 5
    data = build_slice_set([case], "infection")
    has_lung = phantom.lungs.reshape(len(phantom.lungs), -1).any(1)
    assert len(data) == int((has_lung & ~infected).sum())
    assert data.synthesize.all()
    assert not data.labels.any()


# --- lesions -------------------------------------------------------------------------------------


def test_synthetic_lesions_lie_in_the_lung_and_change_density_as_labelled(host_case):
    z = host_case.volume.shape[0] // 2
    hu, lung = host_case.volume.hu[z].astype(np.float32), host_case.lungs[z] > 0
    new, labels = insert_lesions(hu, lung, 2.0, np.random.default_rng(3), LesionStyle(p_consolidation=0.5), 4)
    assert labels.any()
    assert not labels[~lung].any()
    assert (new[labels == GGO] - hu[labels == GGO]).mean() > 50  # ground glass is denser than lung
    if (labels == CONSOLIDATION).any():
        assert np.median(new[labels == CONSOLIDATION]) > -250
    assert np.abs(new[~lung] - hu[~lung]).max() == 0  # nothing is drawn outside the lung
    again, labels_again = insert_lesions(hu, lung, 2.0, np.random.default_rng(3), LesionStyle(p_consolidation=0.5), 4)
    assert (again == new).all()
    assert (labels_again == labels).all()


def test_diffuse_opacities_cover_much_more_lung_and_are_off_by_default(host_case):
    z = host_case.volume.shape[0] // 2
    hu, lung = host_case.volume.hu[z].astype(np.float32), host_case.lungs[z] > 0
    single, diffuse, dependent = [], [], []
    for seed in range(12):
        _, blob = insert_lesions(hu, lung, 2.0, np.random.default_rng(seed), LesionStyle(), 1)
        # Off by default: the same draws as a style that names p_diffuse=0 (earlier recipes reproduce).
        _, same = insert_lesions(hu, lung, 2.0, np.random.default_rng(seed), LesionStyle(p_diffuse=0.0), 1)
        assert (same == blob).all()
        style = LesionStyle(p_diffuse=1.0, p_diffuse_consolidation=0.0)
        new, labels = insert_lesions(hu, lung, 2.0, np.random.default_rng(seed), style, 0)
        assert not labels[~lung].any()
        assert np.abs(new[~lung] - hu[~lung]).max() == 0
        assert set(np.unique(labels)) <= {0, GGO}
        single.append((blob > 0).sum())
        diffuse.append((labels > 0).sum())
        _, dense = insert_lesions(
            hu, lung, 2.0, np.random.default_rng(seed), LesionStyle(p_diffuse=1.0, p_diffuse_consolidation=1.0), 0
        )
        dependent.append(np.argwhere(dense == CONSOLIDATION)[:, 0].mean() if dense.any() else np.nan)
    assert np.mean(diffuse) > 3 * np.mean(single)
    assert np.median(diffuse) > 0.2 * lung.sum()
    # Dependent consolidation lies in the back of the lung (high rows), below the lung's centre.
    assert np.nanmean(dependent) > np.argwhere(lung)[:, 0].mean()


def test_lung_samples_keep_lesions_inside_the_lung_label(host_case):
    # Consolidation drawn into a host slice stays lung in the lung network's truth: the network learns to
    # include consolidated lung, which a threshold cannot.
    data = build_slice_set([host_case], "lungs")
    index = np.array([int(np.argmax(data.lungs.reshape(len(data), -1).sum(1)))] * 3)
    style_rng = np.random.default_rng(5)
    x, labels, abnormal = make_batch(data, index, "lungs", style_rng, p_synthetic=1.0, augment=False)
    plain, plain_labels, _ = make_batch(data, index, "lungs", style_rng, p_synthetic=0.0, augment=False)
    assert (abnormal == 1).all()
    assert torch.equal(labels, plain_labels)  # lung labels unchanged ...
    assert (x - plain).abs().max() > 0.2  # ... although dense lesions were drawn


def _disc_lesion(radius_px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(aerated lung, the same with a +300 HU disc lesion, its GGO labels) on 1 mm pixels."""
    yy, xx = np.mgrid[:64, :64]
    disc = (yy - 32) ** 2 + (xx - 32) ** 2 <= radius_px**2
    base = np.full((64, 64), -850.0, np.float32)
    return base, np.where(disc, -550.0, base).astype(np.float32), np.where(disc, GGO, 0).astype(np.uint8)


def test_a_lesion_drawn_through_a_thick_slab_gets_partial_volume_and_the_majority_label():
    # A 4 mm ball in a 20 mm slab covers at most 4 of its 10 slices: faint, and unlabelled (the
    # phantoms' truth rule: a voxel is lesion where at least half of its slices are).
    base, lesioned, labels = _disc_lesion(4)
    image, slab_labels = lesions_through_slab(base, lesioned, labels, 1.0, 2.0, 10, np.random.default_rng(0))
    assert not slab_labels.any()
    change = image - base
    assert 0 < change.max() <= 0.4 * 300 + 1e-3

    # A 15 mm ball in a 3 mm slab: every slice holds almost all of it.
    base, lesioned, labels = _disc_lesion(15)
    image, slab_labels = lesions_through_slab(base, lesioned, labels, 1.0, 1.0, 3, np.random.default_rng(0))
    assert (slab_labels == GGO).sum() >= 0.9 * (labels == GGO).sum()
    assert set(np.unique(slab_labels[labels == 0])) == {0}
    assert image[32, 32] == pytest.approx(-550.0)
    assert (image - base)[labels > 0].min() >= 0


def test_auc_counts_ties_as_half():
    assert auc(np.array([0.9, 0.8, 0.1]), np.array([1, 1, 0])) == 1.0
    assert auc(np.array([0.5, 0.5]), np.array([1, 0])) == 0.5
    assert np.isnan(auc(np.array([0.5]), np.array([1])))


# --- training ------------------------------------------------------------------------------------


def _config(task: str, epochs: int) -> TrainConfig:
    return TrainConfig(task=task, epochs=epochs, batch_size=4, steps_per_epoch=3, lr=5e-3, width=4, seed=1)


def test_training_lowers_the_loss_and_writes_verified_best_weights(tmp_path, phantom_case, host_case):
    data = build_slice_set([phantom_case, host_case], "infection")
    train, val = split_validation(data, block=2, every=4)
    history = train_network(_config("infection", 4), train, val, tmp_path, log=lambda _: None)
    assert history[-1].loss < history[0].loss
    assert (tmp_path / "checkpoint.pt").exists()
    loaded = load_weights("infection-unet2d", tmp_path, version="1.0")
    best = max(history, key=lambda r: r.metrics["dice"])
    assert loaded.metadata.metrics["epoch"] == best.epoch
    assert loaded.metadata.metrics["validation"]["dice"] == pytest.approx(best.metrics["dice"])


def test_training_is_deterministic_and_resume_continues_exactly(tmp_path, phantom_case):
    data = build_slice_set([phantom_case], "lungs")
    train, val = split_validation(data, block=2, every=4)

    def weights(path):
        return torch.load(path / "checkpoint.pt", weights_only=False)["model"]

    train_network(_config("lungs", 2), train, val, tmp_path / "a", log=lambda _: None)
    train_network(_config("lungs", 2), train, val, tmp_path / "b", log=lambda _: None)
    # A run stopped after its first epoch and resumed ends where the uninterrupted run ended.
    train_network(_config("lungs", 2), train, val, tmp_path / "c", stop_after_epoch=1, log=lambda _: None)
    messages = []
    history = train_network(_config("lungs", 2), train, val, tmp_path / "c", resume=True, log=messages.append)
    assert any("resuming" in m for m in messages)
    assert [r.epoch for r in history] == [1, 2]
    a, b, c = weights(tmp_path / "a"), weights(tmp_path / "b"), weights(tmp_path / "c")
    for key in a:
        assert torch.equal(a[key], b[key]), key
        torch.testing.assert_close(a[key], c[key], msg=key)


def test_the_weight_average_is_what_is_scored_and_saved_and_resumes_exactly(tmp_path, phantom_case):
    data = build_slice_set([phantom_case], "lungs")
    train, val = split_validation(data, block=2, every=4)
    config = replace(_config("lungs", 2), ema=0.9)

    def averaged(state):
        return {k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")}

    history = train_network(config, train, val, tmp_path / "a", log=lambda _: None)
    final = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    # The same run stopped after one epoch, then resumed: the average continues where it was.
    train_network(config, train, val, tmp_path / "b", stop_after_epoch=1, log=lambda _: None)
    first = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    train_network(config, train, val, tmp_path / "b", resume=True, log=lambda _: None)
    resumed = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    for key, value in final["ema"].items():
        torch.testing.assert_close(resumed["ema"][key], value, msg=key)

    assert averaged(final).keys() == final["model"].keys()
    assert any(not torch.equal(averaged(final)[k], final["model"][k]) for k in final["model"])
    # The weights written (fp16) are the average's at the best epoch, with that epoch's validation score.
    best = max(history, key=lambda r: r.metrics["dice"])
    loaded = load_weights("lungs-unet2d", tmp_path / "a", version="1.0")
    assert loaded.metadata.metrics["ema"] == 0.9
    assert loaded.metadata.metrics["validation"]["dice"] == pytest.approx(best.metrics["dice"])
    for key, value in averaged(first if best.epoch == 1 else final).items():
        torch.testing.assert_close(loaded.state_dict[key].float(), value.half().float(), msg=key)
    with pytest.raises(ValueError, match="between 0 and 1"):
        train_network(replace(config, ema=1.5), train, val, tmp_path / "c", log=lambda _: None)


def test_training_runs_on_the_device_asked_for_and_writes_checkpoints_any_machine_resumes(tmp_path, phantom_case):
    gpu = torch.cuda.is_available()
    assert resolve_device("auto").type == ("cuda" if gpu else "cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu': cpu, cuda or auto"):
        resolve_device("tpu")
    if not gpu:
        with pytest.raises(ValueError, match="torch sees no GPU"):
            resolve_device("cuda")
    data = build_slice_set([phantom_case], "lungs")
    train, val = split_validation(data, block=2, every=4)
    messages = []
    train_network(_config("lungs", 1), train, val, tmp_path, device="auto", log=messages.append)
    assert any(f"on {'cuda' if gpu else 'cpu'}" in m for m in messages)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    tensors = list(state["model"].values()) + [
        t for per_param in state["optimizer"]["state"].values() for t in per_param.values() if torch.is_tensor(t)
    ]
    assert tensors
    assert all(t.device.type == "cpu" for t in tensors)


def test_classifier_learns_from_slice_labels_and_records_its_calibration(tmp_path, phantom_case, host_case):
    data = build_slice_set([phantom_case, host_case], "classifier")
    assert set(np.unique(data.abnormal)) == {0.0, 1.0}
    train, val = split_validation(data, block=2, every=4)
    messages = []
    history = train_network(_config("classifier", 2), train, val, tmp_path, log=messages.append)
    assert set(history[-1].metrics) == {"auc", "accuracy"}
    metadata = load_weights("slice-resnet2d", tmp_path, version="1.0").metadata
    calibration = metadata.metrics["calibration"]
    assert calibration["specificity"] == 0.9
    assert calibration["logit_offset"] == metadata.logit_offset
    assert any("calibrated" in m for m in messages)


class _MeanLogit(torch.nn.Module):
    """Logit = mean of the image's left half: a slice and its mirror image read differently."""

    def forward(self, x):
        return x[..., : x.shape[-1] // 2].mean(dim=(1, 2, 3))[:, None]


def _calibration_batches(normal_levels, abnormal_levels):
    images, flags = [], []
    for level, flag in [(v, 0.0) for v in normal_levels] + [(v, 1.0) for v in abnormal_levels]:
        image = torch.zeros(1, 4, 4)
        image[..., :2], image[..., 2:] = level, level + 1.0  # mirrored reading: level + 1
        images.append(image)
        flags.append(flag)
    x, abnormal = torch.stack(images), torch.tensor(flags)
    return [(x[i : i + 8], None, abnormal[i : i + 8]) for i in range(0, len(x), 8)]


def test_calibration_puts_p_one_half_at_the_chosen_share_of_normal_slices():
    normal = np.arange(100, dtype=float)  # mean of the two readings: level + 0.5
    batches = _calibration_batches(normal, abnormal_levels=[500.0] * 30)  # abnormal slices are not used
    offset, count = calibrate_logit_offset(_MeanLogit(), batches, specificity=0.9)
    assert count == 100
    readings = []
    for x, _, abnormal in batches:
        logits = _MeanLogit()(torch.cat([x, x.flip(-1)]))[:, 0] - offset
        both = torch.sigmoid(logits)
        readings.append(((both[: len(x)] + both[len(x) :]) / 2)[abnormal == 0])
    positive = (torch.cat(readings) > 0.5).float().mean().item()
    assert 0.05 <= positive <= 0.10
    # Too few normal slices to place a quantile: no shift.
    assert calibrate_logit_offset(_MeanLogit(), _calibration_batches(normal[:5], [1.0]), 0.9) == (0.0, 5)
    with pytest.raises(ValueError, match="specificity"):
        calibrate_logit_offset(_MeanLogit(), batches, specificity=1.0)


def test_the_slice_classifier_reads_with_its_calibrated_offset(tmp_path, phantom, phantom_case, host_case):
    from dataclasses import replace

    from analysis.nets.registry import save_weights
    from analysis.nets.segmenters import SliceClassifier

    data = build_slice_set([phantom_case, host_case], "classifier")
    train, val = split_validation(data, block=2, every=4)
    train_network(_config("classifier", 1), train, val, tmp_path / "run", log=lambda _: None)
    loaded = load_weights("slice-resnet2d", tmp_path / "run", version="1.0")
    readings = {}
    for offset in (-40.0, 0.0, 40.0):
        folder = tmp_path / f"offset{offset:+.0f}"
        save_weights(loaded.state_dict, replace(loaded.metadata, logit_offset=offset), folder)
        readings[offset] = SliceClassifier.from_weights(folder)(phantom.volume, phantom.lungs)
    with_lung = phantom.lungs.reshape(len(phantom.lungs), -1).any(1)
    assert (readings[-40.0][with_lung] > 0.99).all()
    assert (readings[40.0][with_lung] < 0.01).all()
    assert (readings[-40.0] >= readings[0.0]).all()
    assert (readings[0.0] >= readings[40.0]).all()


def test_train_command_runs_without_a_database_and_fine_tunes(tmp_path, capsys):
    call_command(
        "train",
        "lungs",
        "--data",
        "phantom:1",
        "--out",
        str(tmp_path / "run"),
        "--epochs",
        "1",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--width",
        "4",
    )
    out = capsys.readouterr().out
    assert "epoch 1/1" in out
    assert "best epoch 1" in out
    call_command(
        "train",
        "lungs",
        "--data",
        "phantom:1",
        "--out",
        str(tmp_path / "site"),
        "--epochs",
        "1",
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--width",
        "4",
        "--resume",
        str(tmp_path / "run"),
    )
    assert "fine-tuning lungs" in capsys.readouterr().out
    with pytest.raises(CommandError, match="does not exist"):
        call_command("train", "infection", "--data", f"medseg2d:{tmp_path / 'none'}", "--out", str(tmp_path / "x"))
    with pytest.raises(CommandError, match="unknown device 'tpu'"):
        call_command("train", "lungs", "--data", "phantom:1", "--out", str(tmp_path / "x"), "--device", "tpu")
    with pytest.raises(CommandError, match=r"--diffuse is a share of slices, between 0 and 1, not 2\.0"):
        call_command("train", "infection", "--data", "phantom:1", "--out", str(tmp_path / "x"), "--diffuse", "2")
    with pytest.raises(CommandError, match=r"--ema is a decay per step: 0 \(off\) or between 0 and 1, not 1\.0"):
        call_command("train", "infection", "--data", "phantom:1", "--out", str(tmp_path / "x"), "--ema", "1")
    call_command("train", "infection", "--data", "phantom:1", "--out", str(tmp_path / "diffuse"), "--epochs", "1",
                 "--steps", "1", "--batch-size", "2", "--width", "4", "--diffuse", "0.3")  # fmt: skip
    assert load_weights("infection-unet2d", tmp_path / "diffuse", version="1.0").metadata.metrics["diffuse"] == 0.3


# --- evaluation commands -------------------------------------------------------------------------


def _ggo_everywhere_weights(model_dir):
    """A tiny infection network whose output layer is biased to GGO: it marks everything it sees."""
    from analysis.nets.architectures import INFECTION_MODEL, build_network, infection_architecture
    from analysis.nets.registry import WeightMetadata, save_weights

    torch.manual_seed(0)
    arch = infection_architecture(width=4)
    net = build_network(arch)
    last = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)][-1]
    with torch.no_grad():
        last.bias[:] = torch.tensor([-20.0, 20.0, 0.0])
    meta = WeightMetadata(
        name=INFECTION_MODEL, version="1.0", stage="infection", architecture=arch,
        classes=["background", "ggo", "consolidation"], input={"size": 64, "window": [-1000.0, 250.0]},
    )  # fmt: skip
    save_weights(net.state_dict(), meta, model_dir, half=False)


def test_evaluate_slices_scores_dice_and_writes_masks_with_the_same_names(tmp_path, capsys):
    import json

    _write_medseg(tmp_path / "slices")
    _ggo_everywhere_weights(tmp_path / "models")
    images, masks = tmp_path / "slices" / "images", tmp_path / "slices" / "masks"
    call_command("evaluate-slices", str(images), str(masks), "--model-dir", str(tmp_path / "models"),
                 "--out", str(tmp_path / "pred"), "--json")  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 5
    for row in result["per_image"]:
        truth = np.array(Image.open(masks / f"{row['image']}.png"))
        written = np.array(Image.open(tmp_path / "pred" / f"{row['image']}.png"))
        assert written.shape == truth.shape
        assert (written == 1).all()  # GGO everywhere, as the network says
        expected = 2 * (truth > 0).sum() / ((truth > 0).sum() + truth.size)
        assert row["infection"] == pytest.approx(expected)
        if (truth == 2).any():
            assert row["consolidation"] == 0.0
    call_command("evaluate-slices", str(images), str(masks), "--model-dir", str(tmp_path / "models"), "--fold", "1/5")
    assert "1 images" in capsys.readouterr().out
    with pytest.raises(CommandError, match=r"infection-unet2d\.json is missing"):
        call_command("evaluate-slices", str(images), str(masks), "--model-dir", str(tmp_path))


def test_evaluate_series_measures_slice_auc_and_poi(tmp_path, capsys, phantom):
    import json

    paths = write_dicom_series(phantom.volume, tmp_path / "series", patient_id="P-eval")
    infected = phantom.infection.reshape(len(phantom.infection), -1).any(1)
    _write_slice_labels(paths, infected, tmp_path / "labels.csv")
    args = [str(tmp_path / "series"), str(tmp_path / "labels.csv"), "--json"]
    call_command("evaluate-series", *args, "--method", "baseline")
    baseline = json.loads(capsys.readouterr().out)
    assert baseline["labelled_slices"] == len(paths)
    assert baseline["auc_infected_share"] > 0.8  # the density baseline finds the phantom's dense lesions

    _ggo_everywhere_weights(tmp_path / "models")  # no lung weights: the classical lungs are used
    call_command("evaluate-series", *args, "--model-dir", str(tmp_path / "models"))
    network = json.loads(capsys.readouterr().out)
    assert [m["kind"] for m in network["models"]] == ["classical", "network"]
    assert network["poi"] == pytest.approx(1.0)  # everything inside the lungs is marked
    assert network["poi_in_infected_slices"] == pytest.approx(1.0)
    assert 0.0 <= network["auc_infected_share"] <= 1.0

    call_command("evaluate-series", *args)  # the shipped networks, slice classifier included
    shipped = json.loads(capsys.readouterr().out)
    assert shipped["models"][-1]["stage"] == "classifier"
    # The pipeline's slice reading (classifier + lesion area) finds the phantom's lesion slices.
    assert shipped["auc_slice_reading"] > 0.85


def _write_slice_labels(paths, infected, csv_path) -> None:
    """A slice-label CSV in the P001_slice_labels.csv layout for the written series."""
    import pydicom

    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "sop_instance_uid", "infected"])
        for z, path in enumerate(paths):
            writer.writerow([path.name, pydicom.dcmread(path).SOPInstanceUID, int(infected[z])])


def test_evaluate_slices_combined_adds_the_baseline_dense_cores_that_touch_a_network_lesion(tmp_path, capsys):
    import json

    folder = tmp_path / "slices"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    rng = np.random.default_rng(2)
    for i in range(3):
        # Soft tissue around aerated lung holding a dense 16 mm lesion (0.8 mm pixels), in the posterior
        # lung: the baseline leaves thinner structures and the hilum to the network.
        image = rng.normal(214, 3, (128, 128))
        image[16:112, 10:118] = rng.normal(44, 3, (96, 108))
        image[86:106, 40 + i : 60 + i] = 214
        mask = np.zeros(image.shape, np.uint8)
        mask[86:106, 40 + i : 60 + i] = 2
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / "images" / f"{i}.jpg")
        Image.fromarray(mask).save(folder / "masks" / f"{i}.png")
    _ggo_everywhere_weights(tmp_path / "models")
    images, masks, models = folder / "images", folder / "masks", str(tmp_path / "models")
    call_command("evaluate-slices", str(images), str(masks), "--method", "baseline", "--out", str(tmp_path / "base"))
    call_command("evaluate-slices", str(images), str(masks), "--model-dir", models, "--method", "combined",
                 "--out", str(tmp_path / "comb"), "--json")  # fmt: skip
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{") :])
    assert result["model"]["name"] == "infection-unet2d+hu-band-baseline"
    for i in range(3):
        baseline = np.array(Image.open(tmp_path / "base" / f"{i}.png"))
        combined = np.array(Image.open(tmp_path / "comb" / f"{i}.png"))
        assert (baseline == 2).sum() > 40  # the lesion is dense enough for the baseline
        np.testing.assert_array_equal(combined, np.where(baseline == 2, 2, 1))


def test_pasted_lesions_land_on_aerated_lung_only_with_the_donor_s_hu_and_labels():
    # A plane: air outside the body (edges), soft tissue, one aerated lung with a lesion of its own.
    image = np.full((64, 64), -1000.0, np.float32)
    image[8:56, 8:56] = 40.0
    image[16:48, 16:40] = -850.0
    labels = np.zeros((64, 64), np.uint8)
    image[20:24, 20:24], labels[20:24, 20:24] = -500.0, 1
    # A donor whose lesion covers the whole picture: turned or flipped, it still does.
    donor_image = np.full((64, 64), -20.0, np.float32)
    donor_labels = np.full((64, 64), 2, np.uint8)
    out_image, out_labels = paste_lesions(image, labels, donor_image, donor_labels, np.random.default_rng(0))
    lung = image == -850.0
    assert (out_labels[lung] == 2).all()
    assert (out_image[lung] == -20.0).all()
    assert (out_labels[20:24, 20:24] == 2).all()  # the plane's own lesion takes the donor's label
    outside = ~lung & (labels == 0)
    assert (out_labels[outside] == 0).all()  # never on soft tissue or the air outside the body
    assert (out_image[outside] == image[outside]).all()
    # A donor without lesions changes nothing.
    same_image, same_labels = paste_lesions(image, labels, donor_image, np.zeros_like(labels), np.random.default_rng(0))
    assert (same_image == image).all()
    assert (same_labels == labels).all()


# --- the MedSeg cross-validation protocol --------------------------------------------------------


def test_cross_validation_pre_trains_then_scores_each_fold_on_slices_it_never_trained_on(
    tmp_path, capsys, host_case, phantom_case
):
    from analysis.training import crossval

    medseg = tmp_path / "medseg"
    _write_medseg(medseg, n=10)
    save_slice_set(tmp_path / "hosts.npz", build_slice_set([host_case, phantom_case], "infection"))
    out = tmp_path / "cv"
    base = ["run", "--medseg", str(medseg), "--out", str(out)]
    assert crossval.main(base) == 2  # nothing to start from
    assert crossval.main([*base, "--init", str(tmp_path)]) == 2
    assert "no metadata for model 'infection-unet2d'" in capsys.readouterr().err
    assert crossval.main(["run", "--medseg", str(tmp_path / "none"), "--out", str(out), "--init", str(tmp_path)]) == 2
    assert "must be folders of images and masks" in capsys.readouterr().err
    assert crossval.main([*base, "--pretrain-data", str(tmp_path / "hosts.npz")]) == 2
    assert "too little data to set a validation part aside" in capsys.readouterr().err
    argv = [*base, "--pretrain-data", str(tmp_path / "hosts.npz"), "phantom:1", "--width", "4", "--workers", "1",
            "--pretrain-epochs", "1", "--epochs", "2", "--steps", "1", "--folds", "0", "1"]  # fmt: skip
    assert crossval.main(argv) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert rows[0]["pretrain"] == str(out / "pretrain")
    folds = {row["fold"]: row for row in rows[1:]}
    assert sorted(folds) == [0, 1]
    for k, row in folds.items():
        held_out = read_medseg2d(medseg / "images", medseg / "masks", fold=(k, 5), part="test")
        assert [r["image"] for r in row["per_image"]] == held_out.ids
        assert 0.0 <= row["mean_dice"]["infection"] <= 1.0
        tuned = load_weights("infection-unet2d", out / f"seed0-fold{k}", version="1.0").metadata
        assert tuned.training_data == [f"medseg2d:{medseg},fold={k}/5,train"]
    summary = json.loads((out / "summary.json").read_text())
    expected = np.mean([folds[k]["mean_dice"]["infection"] for k in (0, 1)])
    assert summary["mean_by_seed"]["0"] == pytest.approx(expected, abs=5e-4)
    assert summary["mean_over_complete_seeds"] is None  # two of five folds ran
    wider = ["run", "--medseg", str(medseg), "--out", str(tmp_path / "cv2"), "--init", str(out / "pretrain")]
    assert crossval.main([*wider, "--width", "8"]) == 2
    assert "the weights have channels [4, 8, 16, 32], --width 8 asks for [8, 16, 32, 64]" in capsys.readouterr().err
    assert crossval.main([*wider, "--width", "4", "--ema", "1.2"]) == 2
    assert "--ema is a decay per step: 0 (off) or between 0 and 1, not 1.2" in capsys.readouterr().err
    assert not (tmp_path / "cv2").exists()
