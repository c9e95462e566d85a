"""Network segmenters on a phantom, with tiny randomly initialised networks (behaviour, not accuracy)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from analysis.nets.architectures import (
    CLASSIFIER_MODEL,
    EXPECTED_VERSIONS,
    INFECTION_MODEL,
    LUNG_MODEL,
    build_network,
    classifier_architecture,
    infection_architecture,
    lung_architecture,
)
from analysis.nets.preprocess import Box, crop, lung_box, uncrop, window
from analysis.nets.registry import ModelFileError, WeightMetadata, save_weights
from analysis.nets.segmenters import (
    InfectionNetSegmenter,
    LungNetSegmenter,
    SliceClassifier,
    infection_labels,
    load_segmenters,
)
from analysis.phantoms import Severity, make_phantom, random_spec


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(random_spec(3, Severity.SEVERE), slice_thickness_mm=15.0, pixel_spacing_mm=3.0, matrix=128)


def _metadata(name: str, stage: str, architecture: dict, size: int, version: str | None = None) -> WeightMetadata:
    return WeightMetadata(
        name=name,
        version=version or EXPECTED_VERSIONS[name],
        stage=stage,
        architecture=architecture,
        classes=["a", "b", "c"],
        input={"size": size, "window": [-1000.0, 250.0]},
    )


def _tiny(arch: dict, seed: int = 0):
    torch.manual_seed(seed)
    return build_network(arch)


def test_window_and_box_helpers_round_trip():
    assert window(np.array([-2000, -1000, -375, 250, 900])).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    mask = np.zeros((2, 50, 60), bool)
    mask[1, 10:20, 5:45] = True
    box = lung_box(mask, margin=0.0)
    assert box == Box(y0=-5, x0=5, side=40)  # square, centred on the lungs, may leave the image
    image = np.arange(50 * 60).reshape(1, 50, 60)
    cut = crop(image, box, fill=-1)
    assert cut.shape == (1, 40, 40)
    assert (cut[0, :5] == -1).all()
    back = uncrop(cut, box, (50, 60), fill=-1)
    assert (back[0, 0:35, 5:45] == image[0, 0:35, 5:45]).all()
    assert (back[0, 40:] == -1).all()


def test_lung_segmenter_returns_lung_labels_on_the_volume_grid(phantom):
    segmenter = LungNetSegmenter(_tiny(lung_architecture(width=4)), _metadata(LUNG_MODEL, "lungs", {}, 64))
    labels = segmenter(phantom.volume)
    assert labels.shape == phantom.volume.shape
    assert labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1, 2}
    assert segmenter.model_info.stage == "lungs"
    assert segmenter.model_info.kind == "network"


def test_infection_segmenter_labels_only_inside_the_lungs(phantom):
    lungs = phantom.lungs
    meta = _metadata(INFECTION_MODEL, "infection", {}, 64)
    net = _tiny(infection_architecture(width=4))
    # Bias the output layer towards GGO so an untrained network marks (almost) everything it sees.
    last = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)][-1]
    with torch.no_grad():
        last.bias[:] = torch.tensor([-5.0, 5.0, 0.0])
    infection = InfectionNetSegmenter(net, meta)(phantom.volume, lungs)
    assert infection.shape == phantom.volume.shape
    assert infection.dtype == np.uint8
    assert set(np.unique(infection)) <= {0, 1, 2}
    assert (infection[lungs == 0] == 0).all()
    assert (infection[lungs > 0] > 0).mean() > 0.9  # what the network says inside the lungs is kept
    empty = InfectionNetSegmenter(net, meta)(phantom.volume, np.zeros_like(lungs))
    assert not empty.any()


def test_infection_segmenter_reads_a_subset_of_slices_as_it_reads_them_in_the_whole_study(phantom):
    lungs = phantom.lungs
    torch.manual_seed(3)  # random weights: a per-slice reading that depends on the crop would show
    segmenter = InfectionNetSegmenter(_tiny(infection_architecture(width=4)), _metadata(INFECTION_MODEL, "i", {}, 64))
    whole = segmenter(phantom.volume, lungs)
    with_lung = np.flatnonzero(lungs.any(axis=(1, 2)))
    zs = with_lung[[0, len(with_lung) // 2, -1]]
    subset = segmenter.segment_slices(phantom.volume, lungs, zs)
    np.testing.assert_array_equal(subset[zs], whole[zs])
    others = np.setdiff1d(np.arange(len(lungs)), zs)
    assert not subset[others].any()
    assert whole[zs].any()


def test_infection_segmenter_refuses_a_mask_of_another_shape(phantom):
    segmenter = InfectionNetSegmenter(_tiny(infection_architecture(width=4)), _metadata(INFECTION_MODEL, "i", {}, 64))
    with pytest.raises(ValueError, match="does not match"):
        segmenter(phantom.volume, phantom.lungs[1:])


def test_infection_labels_call_a_pixel_infected_when_the_two_kinds_together_outweigh_none():
    # P(none, GGO, consolidation) of four pixels; the first is split between the kinds (argmax: none).
    probs = torch.tensor([[0.40, 0.35, 0.25], [0.60, 0.30, 0.10], [0.30, 0.30, 0.40], [0.05, 0.90, 0.05]])
    logits = probs.log().T.reshape(1, 3, 2, 2)
    assert logits.argmax(1).flatten().tolist() == [0, 0, 2, 1]
    assert infection_labels(logits).flatten().tolist() == [1, 0, 2, 1]
    assert infection_labels(logits).dtype == torch.uint8


def test_infection_segmenter_labels_planes_of_any_size():
    segmenter = InfectionNetSegmenter(_tiny(infection_architecture(width=4)), _metadata(INFECTION_MODEL, "i", {}, 64))
    planes = [np.full((70, 45), -800, np.int16), np.full((33, 90), 0, np.int16)]
    labels = segmenter.segment_planes(planes)
    assert [lab.shape for lab in labels] == [(70, 45), (33, 90)]


def test_slice_classifier_gives_a_probability_per_slice_and_zero_without_lung(phantom):
    classifier = SliceClassifier(_tiny(classifier_architecture(width=4)), _metadata(CLASSIFIER_MODEL, "c", {}, 64))
    probs = classifier(phantom.volume, phantom.lungs)
    assert probs.shape == (phantom.volume.shape[0],)
    has_lung = phantom.lungs.any(axis=(1, 2))
    assert ((probs > 0) & (probs < 1))[has_lung].all()
    assert (probs[~has_lung] == 0).all()
    # Each slice is read as it is and mirrored left-right, so a mirrored scan reads the same.
    mirrored = replace(phantom.volume, hu=np.ascontiguousarray(phantom.volume.hu[:, :, ::-1]))
    np.testing.assert_allclose(classifier(mirrored, phantom.lungs[:, :, ::-1].copy()), probs, atol=1e-5)


def test_segmenters_load_verified_weights_and_refuse_other_versions(phantom, tmp_path):
    arch = lung_architecture(width=4)
    net = _tiny(arch, seed=5)
    save_weights(net.state_dict(), _metadata(LUNG_MODEL, "lungs", arch, 64), tmp_path)
    segmenters = load_segmenters(tmp_path)
    assert set(segmenters) == {"lungs"}
    loaded = segmenters["lungs"]
    direct = LungNetSegmenter(net, _metadata(LUNG_MODEL, "lungs", arch, 64))
    # fp16 storage changes the logits a little; labels agree almost everywhere.
    assert (loaded(phantom.volume) == direct(phantom.volume)).mean() > 0.99
    assert loaded.model_info.sha256
    assert loaded.model_info.name == LUNG_MODEL

    save_weights(net.state_dict(), _metadata(LUNG_MODEL, "lungs", arch, 64, version="0.9"), tmp_path)
    with pytest.raises(ModelFileError, match="expects"):
        load_segmenters(tmp_path)


def _biased(arch: dict, bias: list[float]):
    """A tiny network whose output layer is biased to one class: it labels everything it sees with it."""
    net = _tiny(arch)
    last = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)][-1]
    with torch.no_grad():
        last.bias[:] = torch.tensor(bias)
    return net


def test_segmenters_plug_into_run_pipeline_and_are_recorded(phantom):
    from analysis.pipeline.run import run_pipeline

    lungs = LungNetSegmenter(
        _biased(lung_architecture(width=4), [-20.0, 20.0, -20.0]), _metadata(LUNG_MODEL, "lungs", {}, 64)
    )
    infection = InfectionNetSegmenter(
        _biased(infection_architecture(width=4), [-20.0, 20.0, -20.0]), _metadata(INFECTION_MODEL, "infection", {}, 64)
    )
    result = run_pipeline(phantom.volume, lung_segmenter=lungs, infection_segmenter=infection)
    assert (result.lungs == 1).all()  # everything is "right lung", as the network says
    assert result.region("both").poi == pytest.approx(1.0)
    recorded = {m.stage: m for m in result.models}
    assert recorded["lungs"] == lungs.info
    assert recorded["infection"] == infection.info
    assert recorded["infection"].kind == "network"
