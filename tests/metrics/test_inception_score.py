"""The Inception Score: its definition, its split rule, and the command on real photos.

The reference for the definition is SciPy's relative entropy (``scipy.stats.entropy(p, q)`` is
KL(p || q)); the reference for the network is pytorch-fid's FID network with the seeded weights
of test_fid, whose pool3 activations times its classifier's weights (no bias, as the original
code) give p(y|x). Tolerances: 1e-12 relative for the formula in float64; 1e-4 relative for the
command, whose features differ from pytorch-fid's by float32 rounding (see test_fid).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from test_fid import (
    PHOTOS_A,
    PHOTOS_B,
    fid_checkpoint,  # noqa: F401  (a fixture)
    fid_reference_state,
    pytorch_fid_activations,
    run_cli,
    skimage_photo,
)

from mlx_inception.errors import DataError
from mlx_inception.metrics.inception_score import inception_score

scipy_stats = pytest.importorskip("scipy.stats")


def reference_score(probabilities: np.ndarray, splits: int) -> tuple[float, float]:
    """exp(mean KL(p(y|x) || p(y))) per consecutive part, with SciPy's KL divergence."""
    scores = []
    for part in np.array_split(probabilities, splits):
        marginal = part.mean(axis=0)
        divergences = [scipy_stats.entropy(row, marginal) for row in part]
        scores.append(np.exp(np.mean(divergences)))
    return float(np.mean(scores)), float(np.std(scores))


def test_identical_predictions_score_one():
    probabilities = np.tile(np.random.default_rng(0).dirichlet(np.ones(7)), (12, 1))
    assert inception_score(probabilities, splits=3).mean == pytest.approx(1.0, abs=1e-12)


def test_confident_predictions_spread_evenly_over_k_classes_score_k():
    probabilities = np.eye(5)[np.arange(20) % 5]  # exact zeros: 0 log 0 counts as 0
    score = inception_score(probabilities, splits=4)
    assert score.mean == pytest.approx(5.0, rel=1e-12) and score.std == pytest.approx(0.0)


def test_score_matches_the_definition_computed_with_scipy():
    probabilities = np.random.default_rng(1).dirichlet(np.full(20, 0.3), size=50)
    score = inception_score(probabilities, splits=5)
    mean, std = reference_score(probabilities, splits=5)
    assert score.mean == pytest.approx(mean, rel=1e-12)
    assert score.std == pytest.approx(std, rel=1e-9)
    assert score.count == 50 and score.splits == 5


def test_splits_are_consecutive_parts_in_the_given_order():
    # First half identical predictions (score 1), second half 4 distinct one-hot (score 4).
    probabilities = np.concatenate([np.full((4, 4), 0.25), np.eye(4)])
    score = inception_score(probabilities, splits=2)
    assert score.mean == pytest.approx(2.5) and score.std == pytest.approx(1.5)


def test_fewer_images_than_splits_are_refused():
    with pytest.raises(DataError, match="needs at least 10 images, got 8"):
        inception_score(np.full((8, 3), 1 / 3), splits=10)


@pytest.fixture(scope="module")
def photo_folder(module_tmp):
    folder = module_tmp("is_photos")
    for name in PHOTOS_A + PHOTOS_B:
        shutil.copy(skimage_photo(name), folder / name)
    return folder


def test_command_matches_pytorch_fids_network_on_real_photos(capsys, photo_folder,
                                                            fid_checkpoint):  # noqa: F811
    # pytorch-fid's activations, in the command's order (file names sorted).
    activations = {}
    for photos in (PHOTOS_A, PHOTOS_B):
        for name, row in zip(sorted(photos), pytorch_fid_activations(photos), strict=True):
            activations[name] = row
    pool3 = np.stack([activations[name] for name in sorted(activations)])
    weight = fid_reference_state()["fc.weight"].double().numpy()
    logits = pool3 @ weight.T
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    mean, std = reference_score(probabilities, splits=2)

    code, out, _ = run_cli(capsys, "inception-score", photo_folder, "--weights", fid_checkpoint,
                           "--splits", "2", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["images"] == 8 and result["splits"] == 2
    assert result["inception_score"] == pytest.approx(mean, rel=1e-4)
    assert result["std"] == pytest.approx(std, rel=1e-3, abs=1e-4)
    assert mean > 1.05  # the seeded network tells the photos apart


def test_command_refuses_fewer_images_than_splits(capsys, photo_folder,
                                                  fid_checkpoint):  # noqa: F811
    code, out, err = run_cli(capsys, "inception-score", photo_folder, "--weights",
                             fid_checkpoint)
    assert code == 1 and out == ""
    assert err.startswith("error: ") and "8 images, but 10 splits" in err


def test_command_refuses_a_missing_folder(capsys, tmp_path):
    code, _, err = run_cli(capsys, "inception-score", tmp_path / "nowhere")
    assert code == 1 and "no such folder" in err


def test_command_says_a_folder_without_images_has_none_before_loading_weights(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    code, out, err = run_cli(capsys, "inception-score", tmp_path / "empty", "--weights",
                             tmp_path / "none")
    assert code == 1 and out == ""
    assert err == (f"error: no images in {tmp_path / 'empty'} (files directly inside it: .bmp, "
                   ".jpg, .jpeg, .pgm, .png, .ppm, .tif, .tiff or .webp)\n")
