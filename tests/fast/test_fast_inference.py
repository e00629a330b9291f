"""The fast inference path where inference runs: Predictor, predict, evaluate, FID features.

The network is torchvision's Inception-v3 with BatchNorm statistics measured on real photos
(``calibrated_weights_dir``), saved again with a 107-pixel preprocessing so that each pass is
cheap; the inputs are photos bundled with scikit-image. What is specified:

- fast and plain paths give the same top-5 and probabilities within 0.1% of each other, in
  float32 (measured at most 7e-5 relative, 1.4e-6 absolute, on 8 photos; the closest two of a
  photo's top 6 were 3.7e-5 apart, 27 times the largest difference), so the order is stable;
- in float16 and bfloat16 the fast path is no farther from float32 than the plain half-precision
  path, within 2x (worst and mean photo; measured 0.8x to 1.3x);
- the model handed to a Predictor is not rewritten: it keeps its BatchNorms, its parameters,
  its mode, and gives Grad-CAM bit for bit as before;
- ``--no-fast`` runs the plain network on the command line;
- the app keeps the plain network for predictions and Grad-CAM alike.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

import mlx_inception
from mlx_inception import cli
from mlx_inception.checkpoints.store import save_model
from mlx_inception.data.images import load_image
from mlx_inception.data.labels import imagenet_synsets
from mlx_inception.data.transforms import preprocess
from mlx_inception.fast import fast_model, is_fast
from mlx_inception.inference.gradcam import grad_cam
from mlx_inception.inference.predictor import Predictor
from mlx_inception.model import BasicConv2d, InceptionV3, Preprocessing

skimage_data = pytest.importorskip("skimage.data")
SKIMAGE = Path(skimage_data.__file__).parent
# Colour and grayscale, RGBA, JPEG and PNG, portrait and landscape.
PHOTOS = [
    str(SKIMAGE / name)
    for name in ("chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png", "horse.png",
                 "coins.png", "camera.png", "hubble_deep_field.jpg")
]
SMALL = Preprocessing(resize_size=122, crop_size=107)
# Every class's probability on the fast path within 0.1% of the plain path's (float32; the
# two differ by the rounding of folded BatchNorm and reordered sums: measured 7e-5 at most).
PROBABILITY_RTOL = 1e-3


@pytest.fixture(scope="module")
def small_weights(calibrated_weights_dir, module_tmp) -> Path:
    """The calibrated weights with a 107-pixel preprocessing (resize 122, crop 107)."""
    model = mlx_inception.load(calibrated_weights_dir)
    model.config.preprocessing = SMALL
    return save_model(model, module_tmp("fast") / "weights")


@pytest.fixture(scope="module")
def model(small_weights) -> InceptionV3:
    return mlx_inception.load(small_weights)


def has_every_batchnorm(model: InceptionV3) -> bool:
    convolutions = [m for _, m in model.named_modules() if isinstance(m, BasicConv2d)]
    return len(convolutions) > 90 and all("bn" in m for m in convolutions)


# --- Predictor ---------------------------------------------------------------------------------


def test_the_predictor_runs_the_fast_path_by_default_and_the_plain_model_when_asked(model):
    fast = Predictor(model)
    plain = Predictor(model, fast=False)
    assert fast.fast and is_fast(fast.model) and fast.model is not model
    assert not plain.fast and plain.model is model


def test_fast_and_plain_predictors_agree_on_real_photos(model):
    fast = Predictor(model, top_k=5, batch_size=4).predict(PHOTOS)
    plain = Predictor(model, top_k=5, batch_size=4, fast=False).predict(PHOTOS)
    for f, p in zip(fast, plain, strict=True):
        assert f.error is None and p.error is None
        assert [t.index for t in f.top_k] == [t.index for t in p.top_k], f.source
        np.testing.assert_allclose(f.probabilities, p.probabilities, rtol=PROBABILITY_RTOL)
        # A spread-out softmax, so agreement on the top 5 means something.
        assert 0.01 < p.top_k[0].probability < 0.5


def test_fast_taps_have_every_key_of_the_plain_model_and_agree(model):
    [fast] = Predictor(model).predict(PHOTOS[0], taps=True)
    [plain] = Predictor(model, fast=False).predict(PHOTOS[0], taps=True)
    assert set(fast.taps) == set(plain.taps)
    for key in ("Conv2d_1a_3x3", "Mixed_5b.branch_pool", "Mixed_6e", "Mixed_7c", "avgpool"):
        scale = np.abs(plain.taps[key]).max()
        # Same tolerance as tests/fast/test_fuse.py: 1e-4 of the activation's scale.
        assert np.abs(fast.taps[key] - plain.taps[key]).max() <= 1e-4 * scale, key


def test_the_model_handed_to_a_predictor_is_left_as_it_was(model):
    before = dict(tree_flatten(model.parameters()))
    model.train()
    try:
        Predictor(model).predict(PHOTOS[0])
        assert model.training  # not even switched to eval mode
    finally:
        model.eval()
    after = dict(tree_flatten(model.parameters()))
    assert type(model) is InceptionV3 and type(model.Mixed_5b).__name__ == "InceptionA"
    assert has_every_batchnorm(model)
    assert after.keys() == before.keys()
    assert all(after[key] is before[key] for key in before)  # the same arrays, not copies


def test_grad_cam_of_the_model_is_the_same_after_a_fast_predictor_ran(small_weights):
    model = mlx_inception.load(small_weights)  # its own, so no other test has used it
    image = preprocess(load_image(PHOTOS[0]), SMALL)
    before = grad_cam(model, image, class_index=None, layer="Mixed_6e.branch7x7dbl")
    predictor = Predictor(model)
    predictor.predict(PHOTOS[:2], taps=True)
    after = grad_cam(model, image, class_index=None, layer="Mixed_6e.branch7x7dbl")
    # Gradients still go through the plain network: bit for bit the same map.
    assert after.class_index == before.class_index
    np.testing.assert_array_equal(after.heatmap, before.heatmap)
    np.testing.assert_array_equal(after.channel_weights, before.channel_weights)
    assert before.peak > 0


def test_from_source_gives_a_fast_predictor_or_the_plain_model(small_weights):
    assert is_fast(Predictor.from_source(small_weights).model)
    plain = Predictor.from_source(small_weights, fast=False).model
    assert not is_fast(plain) and has_every_batchnorm(plain)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_fast_path_is_as_close_to_float32_as_the_plain_half_path(
    small_weights, dtype
):
    photos = PHOTOS[:4]
    reference = np.stack(
        [p.probabilities for p in Predictor.from_source(small_weights, fast=False).predict(photos)]
    )
    errors = {}
    for fast in (True, False):
        predictor = Predictor.from_source(small_weights, dtype=dtype, fast=fast, batch_size=4)
        assert is_fast(predictor.model) == fast
        assert predictor.input_dtype == getattr(mx, dtype)
        assert predictor.model.Mixed_5b.branch5x5_2.conv.weight.dtype == getattr(mx, dtype)
        predictions = predictor.predict(photos)
        probabilities = np.stack([p.probabilities for p in predictions])
        assert probabilities.dtype == np.float32 and np.isfinite(probabilities).all()
        errors[fast] = np.abs(probabilities - reference).max(axis=1) / reference.max(axis=1)
    # Each photo's largest probability error relative to its top probability: 16-bit rounding
    # through about 95 layers, which the fast path must not make worse. Photo by photo the two
    # paths' errors differ by 0.5x to 2.1x (rounding in another order); over the photos, the
    # worst and the mean were within 0.8x to 1.3x. Asserted: both within 2x.
    fast, plain = errors[True], errors[False]
    assert fast.max() <= 2 * plain.max(), (fast, plain)
    assert fast.mean() <= 2 * plain.mean(), (fast, plain)


# --- command line ------------------------------------------------------------------------------


@pytest.fixture
def built_predictors(monkeypatch) -> list[Predictor]:
    """Every Predictor the command line builds during the test."""
    built = []
    original = Predictor.__init__

    def recording(self, *args, **kwargs):
        original(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(Predictor, "__init__", recording)
    return built


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    status = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_no_fast_is_documented_in_help(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--no-fast run the plain network instead of the fast inference path" in help_text


def test_predict_runs_the_fast_path_unless_no_fast(small_weights, capsys, built_predictors):
    photos = PHOTOS[:2]
    outputs = {}
    for flags in ((), ("--no-fast",)):
        status, out, err = run_cli(capsys, "predict", *photos, "--weights", small_weights,
                                   "--json", *flags)
        assert status == 0, err
        outputs[flags] = [json.loads(line) for line in out.splitlines()]
    assert [is_fast(p.model) for p in built_predictors] == [True, False]
    assert has_every_batchnorm(built_predictors[1].model)
    # The printed numbers are those of the matching Predictor (the same computation).
    for flags, fast in (((), True), (("--no-fast",), False)):
        expected = Predictor.from_source(small_weights, fast=fast).predict(photos)
        for line, prediction in zip(outputs[flags], expected, strict=True):
            indices = [entry["index"] for entry in line["top_k"]]
            assert indices == [t.index for t in prediction.top_k]
            assert [entry["probability"] for entry in line["top_k"]] == pytest.approx(
                [t.probability for t in prediction.top_k], abs=1e-7
            )


def test_evaluate_runs_the_fast_path_unless_no_fast(
    small_weights, tmp_path, capsys, built_predictors
):
    folder = tmp_path / "data" / imagenet_synsets()[281]
    folder.mkdir(parents=True)
    for photo in PHOTOS[:2]:
        shutil.copy(photo, folder / os.path.basename(photo))
    results = []
    for flags in ((), ("--no-fast",)):
        status, out, err = run_cli(capsys, "evaluate", "--data", tmp_path / "data", "--weights",
                                   small_weights, "--json", *flags)
        assert status in (0, 1), err
        results.append(json.loads(out))
    assert [is_fast(p.model) for p in built_predictors] == [True, False]
    assert results[0]["count"] == results[1]["count"] == 2
    # Same top-1 / top-5 either way (the two paths agree on every photo's top 5).
    assert results[0]["top1_correct"] == results[1]["top1_correct"]
    assert results[0]["top5_correct"] == results[1]["top5_correct"]


# --- the app -------------------------------------------------------------------------------------


def test_the_app_predicts_with_the_plain_network_it_takes_grad_cam_of(small_weights):
    pytest.importorskip("PySide6")
    from mlx_inception_app.session import ModelSession

    session = ModelSession()
    session.load_weights(str(small_weights))
    try:
        assert session.predictor.model is session.model  # one set of weights, not two
        assert not is_fast(session.model) and has_every_batchnorm(session.model)
        analysis = session.analyse(1, PHOTOS[0])
        result = session.grad_cam(1, None, "Mixed_7c")
        image = preprocess(load_image(PHOTOS[0]), SMALL)
        expected = grad_cam(session.model, image, analysis.top_k[0].index, "Mixed_7c")
        # As tests/app/test_app.py: the session hands its recorded taps back (float32 copies).
        np.testing.assert_allclose(result.heatmap, expected.heatmap, atol=1e-5)
    finally:
        session.close()


def test_fast_model_leaves_a_model_already_on_the_fast_path_as_it_is(model):
    fast = fast_model(model)
    assert fast_model(fast) is fast and fast_model(fast, copy=False) is fast
