"""FID as pytorch-fid computes it: the same random weights, the same real photos, the same values.

The reference is pytorch-fid itself (its InceptionV3 wrapper, FIDInception blocks, image loading,
statistics and ``calculate_frechet_distance``), given a seeded state_dict in place of its
download: torchvision's init for a 1008-class network, then every BatchNorm calibrated on real
photos through pytorch-fid's own network (with arbitrary statistics the random network maps every
image to nearly the same features, and every FID to about 0).

Tolerances:
- features: float32 through 94 layers summed in another order, ``max|diff| <= 1e-4 * max|ref|``
  (measured about 2e-5);
- FID values: 1e-4 relative; the features' differences enter the covariances linearly, and the
  float64 square root adds about 1e-12 (measured about 1e-6);
- the square root against SciPy's ``sqrtm``: 1e-9 relative on well-conditioned matrices.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
from pathlib import Path
from unittest import mock

import mlx.core as mx
import numpy as np
import pytest

from mlx_inception import cli
from mlx_inception.metrics import features as fid_features
from mlx_inception.metrics import fid as fid_metrics
from mlx_inception.metrics.fid import FeatureStatistics, frechet_distance, trace_sqrt_product

torch = pytest.importorskip("torch")
fid_inception = pytest.importorskip("pytorch_fid.inception")
fid_score = pytest.importorskip("pytorch_fid.fid_score")

# pytorch-fid calls scipy.linalg.sqrtm(..., disp=False), deprecated in SciPy 1.16.
pytestmark = pytest.mark.filterwarnings("ignore:The `disp` argument:DeprecationWarning")

FEATURE_TOLERANCE = 1e-4
FID_TOLERANCE = 1e-4

# Real photos bundled with scikit-image, copied as they are: RGB and grayscale PNGs, an RGBA
# PNG, JPEGs; from 102x102 (upsampled) to 1000x872 (downsampled), none of them square at 299.
PHOTOS_A = ("chelsea.png", "coffee.png", "microaneurysms.png", "rocket.jpg")
PHOTOS_B = ("astronaut.png", "coins.png", "horse.png", "hubble_deep_field.jpg")


def skimage_photo(name: str) -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data" / name


@contextlib.contextmanager
def pytorch_fid_weights(state: dict):
    """pytorch-fid builds its network from this state_dict instead of downloading one."""
    with mock.patch.object(fid_inception, "load_state_dict_from_url", lambda *a, **k: state):
        yield


@functools.lru_cache(maxsize=1)
def fid_reference_state() -> dict:
    """The FID network's seeded state_dict, BatchNorm calibrated through pytorch-fid's network."""
    from PIL import Image
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    initial = inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=True)
    with pytorch_fid_weights(initial.state_dict()):
        network = fid_inception.fid_inception_v3()  # pytorch-fid's patched blocks
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative average over the calibration batch
    photos = [
        np.asarray(Image.open(skimage_photo(name)).convert("RGB").resize((299, 299)))
        for name in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")
    ]
    batch = torch.from_numpy(np.stack(photos).transpose(0, 3, 1, 2).copy()).float() / 255
    network.train()
    with torch.no_grad():
        network(2 * batch - 1)  # pytorch-fid's input scaling
    return {k: v.clone() for k, v in network.eval().state_dict().items()}


@functools.cache
def pytorch_fid_network(block: int = 3):
    """pytorch-fid's ``InceptionV3([block])`` holding the reference weights."""
    with pytorch_fid_weights(fid_reference_state()):
        return fid_inception.InceptionV3([block]).eval()


@functools.cache
def pytorch_fid_activations(photos: tuple[str, ...]) -> np.ndarray:
    """pytorch-fid's pool3 activations of the named photos, in sorted order (as in a folder);
    batch size 1, since their sizes differ."""
    files = [skimage_photo(name) for name in sorted(photos)]
    return fid_score.get_activations(
        files, pytorch_fid_network(3), batch_size=1, dims=2048, device="cpu", num_workers=0
    )


def make_folder(root: Path, name: str, photos: tuple[str, ...]) -> Path:
    folder = root / name
    folder.mkdir()
    for photo in photos:
        shutil.copy(skimage_photo(photo), folder / photo)
    return folder


@pytest.fixture(scope="module")
def folders(module_tmp) -> dict[str, Path]:
    root = module_tmp("fid_photos")
    return {"a": make_folder(root, "a", PHOTOS_A), "b": make_folder(root, "b", PHOTOS_B)}


@pytest.fixture(scope="module")
def fid_checkpoint(module_tmp) -> Path:
    """The reference state_dict saved as pytorch-fid names its file: SHA-256 prefix included."""
    folder = module_tmp("fid_weights")
    path = folder / "weights.pth"
    torch.save(fid_reference_state(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return path.rename(folder / f"pt_inception-2015-12-05-{digest[:8]}.pth")


@pytest.fixture(scope="module")
def fid_weights_dir(fid_checkpoint, module_tmp) -> Path:
    return fid_features.save_fid_weights(fid_checkpoint, module_tmp("fid") / "mlx")


@pytest.fixture(scope="module")
def fid_model(fid_weights_dir):
    return fid_features.load_fid_inception(fid_weights_dir)


@pytest.fixture(scope="module")
def our_features(fid_model, folders) -> dict[str, np.ndarray]:
    return {
        side: fid_features.extract_features(fid_model, fid_features.list_images(folder), 4)
        for side, folder in folders.items()
    }


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def relative_error(actual: float, expected: float) -> float:
    return abs(actual - expected) / abs(expected)


# --- the network and its features ---------------------------------------------------------------


def test_pool3_features_match_pytorch_fid_on_real_photos(our_features):
    for side, photos in (("a", PHOTOS_A), ("b", PHOTOS_B)):
        expected = pytorch_fid_activations(photos)
        actual = our_features[side]
        assert actual.shape == expected.shape == (4, 2048)
        error = np.max(np.abs(actual - expected))
        assert error <= FEATURE_TOLERANCE * np.max(np.abs(expected)), side
        # The calibrated network tells the photos apart: the test is not comparing constants.
        assert np.std(expected, axis=0).mean() > 0.1 * np.abs(expected).mean()


def test_resize_matches_torch_bilinear_interpolate(folders):
    import torch.nn.functional as F

    for name in ("microaneurysms.png", "rocket.jpg"):  # up- and downsampled, non-square
        pixels = fid_features.read_image(folders["a"] / name).astype(np.float32) / 255
        expected = F.interpolate(
            torch.from_numpy(pixels).permute(2, 0, 1)[None], size=(299, 299), mode="bilinear",
            align_corners=False,
        )[0].permute(1, 2, 0).numpy()
        # Values in [0, 1]: two float32 ulps of 1.0.
        resized = fid_features.resize_bilinear(pixels, (299, 299))
        assert np.max(np.abs(resized - expected)) <= 2.4e-7


def test_fid_network_is_pytorch_fids_architecture(fid_weights_dir):
    config = json.loads((fid_weights_dir / "config.json").read_text())
    assert config["num_classes"] == 1008
    assert config["aux_logits"] is False
    assert config["pool_count_include_pad"] is False  # FIDInceptionA/C/E_1
    assert config["mixed_7c_pool"] == "max"  # FIDInceptionE_2
    assert config["transform_input"] is False


def test_features_stop_at_the_requested_layer_and_equal_its_tap(fid_model):
    x = mx.array(np.random.default_rng(0).uniform(-1, 1, (1, 99, 99, 3)).astype(np.float32))
    _, taps = fid_model.forward_with_taps(x)
    for layer in ("maxpool1", "maxpool2", "Mixed_6e", "avgpool"):
        actual, expected = np.array(fid_model.features(x, layer)), np.array(taps[layer])
        assert actual.shape == expected.shape
        # The fast network's features are its plain call cut short (compiled on a GPU), its
        # taps the eager pass: float32 rounding apart where compilation fuses operations.
        assert np.abs(actual - expected).max() <= 1e-5 * np.abs(expected).max()
    with pytest.raises(ValueError, match="unknown layer 'fc'"):
        fid_model.features(x, "fc")


# --- the distance -------------------------------------------------------------------------------


def exact_fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID from features by the nuclear norm: with S = X^T X (centred, / (n-1)),
    tr sqrt(S_a S_b) is the sum of the singular values of X_a X_b^T, exact for any rank."""
    x_a = (features_a - features_a.mean(0)) / np.sqrt(len(features_a) - 1)
    x_b = (features_b - features_b.mean(0)) / np.sqrt(len(features_b) - 1)
    difference = features_a.mean(0) - features_b.mean(0)
    nuclear = np.linalg.svd(x_a @ x_b.T, compute_uv=False).sum()
    return float(difference @ difference + (x_a**2).sum() + (x_b**2).sum() - 2 * nuclear)


def test_fid_at_2048_dims_matches_pytorch_fids_activations(our_features):
    # pytorch-fid's calculate_frechet_distance needs about a minute here for 2048x2048 (SciPy's
    # sqrtm); its function is compared below at 192 dims and directly on random statistics.
    expected = exact_fid(pytorch_fid_activations(PHOTOS_A), pytorch_fid_activations(PHOTOS_B))
    actual = frechet_distance(
        FeatureStatistics.from_features(our_features["a"]),
        FeatureStatistics.from_features(our_features["b"]),
    )
    assert expected > 100  # different photos, a clearly non-zero distance
    assert relative_error(actual, expected) <= FID_TOLERANCE


def test_fid_command_matches_pytorch_fid_at_192_dims(capsys, folders, fid_weights_dir):
    with pytorch_fid_weights(fid_reference_state()):
        expected = fid_score.calculate_fid_given_paths(
            [str(folders["a"]), str(folders["b"])], batch_size=1, device="cpu", dims=192,
            num_workers=0,
        )
    code, out, _ = run_cli(capsys, "fid", folders["a"], folders["b"], "--weights",
                           fid_weights_dir, "--dims", "192", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["dims"] == 192 and result["a"]["images"] == 4
    assert relative_error(result["fid"], expected) <= FID_TOLERANCE


def test_fid_of_a_folder_with_itself_is_zero(capsys, folders, fid_weights_dir, our_features):
    code, out, _ = run_cli(capsys, "fid", folders["a"], folders["a"], "--weights",
                           fid_weights_dir, "--json")
    assert code == 0
    # Relative to the terms that cancel, tr(S) + tr(S), float64 rounding.
    scale = 2 * np.trace(np.cov(our_features["a"], rowvar=False))
    assert 0 <= json.loads(out)["fid"] <= 1e-9 * scale


def test_fid_command_prints_a_human_readable_line(capsys, folders, fid_weights_dir):
    code, out, _ = run_cli(capsys, "fid", folders["a"], folders["b"], "--weights",
                           fid_weights_dir, "--dims", "64", "--quiet")
    assert code == 0
    assert out.startswith("FID ") and "4 images" in out and "64 features" in out


def test_trace_sqrt_product_matches_scipy_sqrtm():
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(1)
    a = np.cov(rng.standard_normal((400, 128)) * rng.uniform(0.1, 3, 128), rowvar=False)
    b = np.cov(rng.standard_normal((300, 128)) @ rng.standard_normal((128, 128)), rowvar=False)
    expected = np.trace(sqrtm(a @ b)).real
    assert relative_error(trace_sqrt_product(a, b), expected) <= 1e-9


def test_trace_sqrt_product_is_exact_for_fewer_samples_than_dimensions():
    # Five images, 512 features: both covariances have rank 4, the product is singular.
    rng = np.random.default_rng(2)
    features_a, features_b = rng.standard_normal((2, 5, 512))
    x_a = (features_a - features_a.mean(0)) / 2
    x_b = (features_b - features_b.mean(0)) / 2
    exact = np.linalg.svd(x_a @ x_b.T, compute_uv=False).sum()
    actual = trace_sqrt_product(np.cov(features_a, rowvar=False), np.cov(features_b, rowvar=False))
    assert relative_error(actual, exact) <= 1e-9


def test_statistics_of_few_images_take_the_exact_shortcut_through_their_features():
    rng = np.random.default_rng(6)
    features_a, features_b = rng.standard_normal((6, 300)), rng.standard_normal((9, 300)) + 0.1
    a, b = FeatureStatistics.from_features(features_a), FeatureStatistics.from_features(features_b)
    assert a.factor.shape == (300, 6) and b.factor.shape == (300, 9)
    without = frechet_distance(FeatureStatistics(a.mu, a.sigma), FeatureStatistics(b.mu, b.sigma))
    shortcut = frechet_distance(a, b)
    assert relative_error(shortcut, without) <= 1e-9
    assert relative_error(shortcut, exact_fid(features_a, features_b)) <= 1e-12
    # With one side read from a file (no features), the other side's are used.
    assert relative_error(frechet_distance(FeatureStatistics(a.mu, a.sigma), b), shortcut) <= 1e-12


@pytest.mark.parametrize("samples", [200, 20], ids=["full-rank", "rank-deficient"])
def test_frechet_distance_matches_pytorch_fids_function(samples):
    rng = np.random.default_rng(3)
    a = FeatureStatistics.from_features(rng.standard_normal((samples, 64)))
    b = FeatureStatistics.from_features(rng.standard_normal((samples, 64)) * 1.5 + 0.2)
    expected = fid_score.calculate_frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
    # SciPy's sqrtm of a singular product is itself accurate to about 1e-7 relative.
    assert relative_error(frechet_distance(a, b), expected) <= 1e-6


# --- statistics files ---------------------------------------------------------------------------


def test_saved_statistics_are_pytorch_fids_npz_and_reusable(capsys, tmp_path, folders,
                                                           fid_weights_dir):
    stats = tmp_path / "a_stats.npz"
    code, _, _ = run_cli(capsys, "fid", "--save-stats", folders["a"], stats, "--weights",
                         fid_weights_dir, "--dims", "192")
    assert code == 0
    with np.load(stats) as data:
        assert sorted(data.files) == ["mu", "sigma"]
        assert data["mu"].shape == (192,) and data["sigma"].shape == (192, 192)
    # pytorch-fid reads it...
    mu, sigma = fid_score.compute_statistics_of_path(str(stats), None, 1, 192, "cpu")
    assert mu.shape == (192,) and sigma.shape == (192, 192)
    # ... and the FID from the file equals the FID from the folder.
    from_file = run_cli(capsys, "fid", stats, folders["b"], "--weights", fid_weights_dir,
                        "--dims", "192", "--json")
    from_folder = run_cli(capsys, "fid", folders["a"], folders["b"], "--weights",
                          fid_weights_dir, "--dims", "192", "--json")
    assert json.loads(from_file[1])["fid"] == pytest.approx(json.loads(from_folder[1])["fid"],
                                                            rel=1e-12)


def test_statistics_saved_by_pytorch_fid_match_ours(capsys, tmp_path, folders, fid_weights_dir):
    theirs = tmp_path / "theirs.npz"
    with pytorch_fid_weights(fid_reference_state()):
        fid_score.save_fid_stats([str(folders["a"]), str(theirs)], batch_size=1, device="cpu",
                                 dims=192, num_workers=0)
    capsys.readouterr()  # pytorch-fid prints what it saves
    code, out, _ = run_cli(capsys, "fid", theirs, folders["a"], "--weights", fid_weights_dir,
                           "--dims", "192", "--json")
    between_sets = run_cli(capsys, "fid", theirs, folders["b"], "--weights", fid_weights_dir,
                           "--dims", "192", "--json")
    assert code == 0
    # pytorch-fid's statistics of a folder and ours of the same folder: about 0, next to the
    # distance between the two folders.
    assert json.loads(out)["fid"] <= 1e-6 * json.loads(between_sets[1])["fid"]


def test_save_stats_never_overwrites(capsys, tmp_path, folders, fid_weights_dir):
    existing = tmp_path / "kept.npz"
    existing.write_bytes(b"precious")
    code, _, err = run_cli(capsys, "fid", "--save-stats", folders["a"], existing, "--weights",
                           fid_weights_dir)
    assert code == 1 and "exists" in err
    assert existing.read_bytes() == b"precious"


# --- bad input ----------------------------------------------------------------------------------


def write_bad_npz(path: Path) -> Path:
    np.savez(path, mu=np.zeros(192))
    return path


BAD_SOURCES = {
    "missing folder": (lambda tmp, a: tmp / "nowhere", "no such folder or .npz"),
    "empty folder": (lambda tmp, a: _mkdir(tmp / "empty"), "no images in "),
    "one image": (lambda tmp, a: _folder_with(tmp / "one", [a / "chelsea.png"]),
                  "at least 2 images, found 1"),
    "corrupt image": (lambda tmp, a: _corrupt_folder(tmp / "corrupt", a),
                      "broken.png: cannot decode as an image"),
    "npz without sigma": (lambda tmp, a: write_bad_npz(tmp / "bad.npz"), "has no sigma"),
    "not an npz": (lambda tmp, a: _text_file(tmp / "fake.npz"),
                   "fake.npz is not an .npz file (not a zip archive)"),
    "npz of objects": (lambda tmp, a: _object_npz(tmp / "objects.npz"),
                       "objects.npz is not a readable .npz file (it holds Python objects"),
    "a plain file": (lambda tmp, a: _text_file(tmp / "notes.txt"), "neither a folder"),
}


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _folder_with(path: Path, files: list[Path]) -> Path:
    path.mkdir()
    for file in files:
        shutil.copy(file, path / file.name)
    return path


def _corrupt_folder(path: Path, photos: Path) -> Path:
    folder = _folder_with(path, [photos / "chelsea.png"])
    (folder / "broken.png").write_bytes(b"this is not a PNG")
    return folder


def _text_file(path: Path) -> Path:
    path.write_text("hello")
    return path


def _object_npz(path: Path) -> Path:
    np.savez(path, mu=np.array([{"not": "numbers"}], dtype=object), sigma=np.eye(1))
    return path


@pytest.mark.parametrize("case", list(BAD_SOURCES))
def test_bad_source_fails_with_one_clear_line(capsys, tmp_path, folders, fid_weights_dir, case):
    make, message = BAD_SOURCES[case]
    source = make(tmp_path, folders["a"])
    code, out, err = run_cli(capsys, "fid", source, folders["b"], "--weights", fid_weights_dir,
                             "--dims", "64")
    assert code == 1 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert "allow_pickle" not in err  # numpy's advice to load a file unsafely is never passed on


def test_statistics_of_other_dims_are_refused_before_any_feature_is_computed(
    capsys, tmp_path, folders, monkeypatch
):
    stats = tmp_path / "a64.npz"
    FeatureStatistics.from_features(np.random.default_rng(4).standard_normal((5, 64))).save(stats)

    def never(*args, **kwargs):
        raise AssertionError("features were computed before the sizes were compared")

    monkeypatch.setattr(fid_metrics, "extract_features", never)
    code, _, err = run_cli(capsys, "fid", folders["b"], stats, "--weights", tmp_path / "none",
                           "--dims", "192")
    assert code == 1 and err == (
        f"error: {stats} holds statistics of 64 features but --dims is 192: pass --dims 64, or "
        f"compute {stats} again with --dims 192\n")


def test_statistics_of_different_sizes_are_refused(capsys, tmp_path):
    paths = []
    for dims in (64, 192):
        paths.append(tmp_path / f"s{dims}.npz")
        features = np.random.default_rng(dims).standard_normal((5, dims))
        FeatureStatistics.from_features(features).save(paths[-1])
    code, _, err = run_cli(capsys, "fid", *paths)
    assert code == 1 and "64 and 192 features" in err


def test_two_statistics_files_need_no_weights_and_are_called_statistics(capsys, tmp_path):
    paths = []
    for seed in (1, 2):
        paths.append(tmp_path / f"s{seed}.npz")
        features = np.random.default_rng(seed).standard_normal((5, 8))
        FeatureStatistics.from_features(features).save(paths[-1])
    code, out, _ = run_cli(capsys, "fid", *paths)
    assert code == 0
    assert out.endswith(f"({paths[0]}: statistics file; {paths[1]}: statistics file; "
                        "8 features)\n")


def test_save_stats_checks_its_destination_before_computing(capsys, tmp_path, folders):
    (tmp_path / "afile").write_text("")
    # --weights names nothing: the destination must be refused before any weights are read.
    code, out, err = run_cli(capsys, "fid", "--save-stats", folders["a"],
                             tmp_path / "afile" / "x.npz", "--weights", tmp_path / "none")
    assert code == 1 and out == ""
    assert err == (f"error: cannot write {tmp_path}/afile/x.npz: {tmp_path}/afile is a file, not "
                   "a folder\n")


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_save_stats_names_the_file_asked_for_not_a_temporary_one(capsys, tmp_path, folders):
    code, _, err = run_cli(capsys, "fid", "--save-stats", folders["a"], "/proc/x.npz",
                           "--weights", tmp_path / "none")
    assert code == 1
    assert err.startswith("error: cannot write /proc/x.npz: cannot create files in /proc (")


def test_save_stats_of_a_statistics_file_is_refused(capsys, tmp_path):
    stats = tmp_path / "a.npz"
    FeatureStatistics.from_features(np.random.default_rng(6).standard_normal((3, 8))).save(stats)
    code, _, err = run_cli(capsys, "fid", "--save-stats", stats, tmp_path / "b.npz")
    assert code == 1 and err == (f"error: {stats} is already statistics: --save-stats computes "
                                 "them from a folder of images\n")
    assert not (tmp_path / "b.npz").exists()


def test_convert_weights_checks_its_destination_before_reading_the_checkpoint(capsys, tmp_path):
    (tmp_path / "afile").write_text("")
    code, _, err = run_cli(capsys, "fid", "--convert-weights", tmp_path / "not-read.pth",
                           tmp_path / "afile" / "fid")
    assert code == 1 and err == (f"error: cannot write {tmp_path}/afile/fid: {tmp_path}/afile is "
                                 "a file, not a folder\n")


def test_missing_weights_say_where_to_download_them(capsys, folders, monkeypatch):
    monkeypatch.delenv(fid_features.WEIGHTS_ENVIRONMENT_VARIABLE, raising=False)
    code, _, err = run_cli(capsys, "fid", folders["a"], folders["b"])
    assert code == 1 and fid_features.FID_WEIGHTS_URL in err


def test_weights_path_may_come_from_the_environment(capsys, folders, fid_weights_dir,
                                                    monkeypatch):
    monkeypatch.setenv(fid_features.WEIGHTS_ENVIRONMENT_VARIABLE, str(fid_weights_dir))
    code, _, _ = run_cli(capsys, "fid", folders["a"], folders["b"], "--dims", "64", "--quiet")
    assert code == 0


def test_classifier_weights_are_not_taken_for_the_fid_network(capsys, folders,
                                                             reference_checkpoints):
    # torchvision's 1000-class network has the same keys but is not the FID network.
    code, _, err = run_cli(capsys, "fid", folders["a"], folders["b"], "--weights",
                           reference_checkpoints["safetensors"])
    assert code == 1 and "1000 classes, not the FID network's 1008" in err


def test_a_damaged_download_is_caught_by_the_hash_in_its_name(capsys, tmp_path, folders,
                                                              fid_checkpoint):
    damaged = tmp_path / "pt_inception-2015-12-05-00000000.pth"
    shutil.copy(fid_checkpoint, damaged)
    code, _, err = run_cli(capsys, "fid", folders["a"], folders["b"], "--weights", damaged)
    assert code == 1 and "SHA-256" in err and "damaged" in err


def test_converted_weights_load_without_pytorch_and_give_the_same_features(
    capsys, tmp_path, fid_checkpoint, folders
):
    out_dir = tmp_path / "converted"
    code, _, _ = run_cli(capsys, "fid", "--convert-weights", fid_checkpoint, out_dir)
    assert code == 0
    files = fid_features.list_images(folders["a"])[:2]
    from_checkpoint = fid_features.extract_features(
        fid_features.load_fid_inception(fid_checkpoint), files
    )
    with mock.patch.object(torch, "load", side_effect=AssertionError("torch.load was called")):
        from_directory = fid_features.extract_features(
            fid_features.load_fid_inception(out_dir), files
        )
    np.testing.assert_array_equal(from_directory, from_checkpoint)


def test_statistics_files_are_written_atomically(tmp_path, monkeypatch):
    stats = FeatureStatistics.from_features(np.random.default_rng(5).standard_normal((3, 8)))
    target = tmp_path / "stats.npz"

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", fail)
    with pytest.raises(OSError, match="disk full"):
        stats.save(target)
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_fid_network_is_loaded_fast_by_default_and_its_features_match_the_plain_ones(tmp_path,
                                                                                      monkeypatch):
    from mlx_inception.fast import is_fast
    from mlx_inception.metrics.features import extract_features, load_fid_inception
    from mlx_inception.model import BasicConv2d

    checkpoint = tmp_path / "fid.pth"
    torch.save(fid_reference_state(), checkpoint)
    fast = load_fid_inception(checkpoint)
    plain = load_fid_inception(checkpoint, fast=False)
    convolutions = [m for _, m in plain.named_modules() if isinstance(m, BasicConv2d)]
    assert is_fast(fast) and not is_fast(plain) and all("bn" in m for m in convolutions)
    files = [str(skimage_photo(name)) for name in PHOTOS_A[:2]]
    expected = extract_features(plain, files, batch_size=2)
    layers = []
    original = type(fast).features

    def spy(model, x, layer="avgpool"):
        layers.append(layer)
        return original(model, x, layer)

    monkeypatch.setattr(type(fast), "features", spy)
    actual = extract_features(fast, files, batch_size=2)
    assert layers == ["avgpool"]  # the pooled features, computing nothing after them
    assert np.abs(actual - expected).max() <= FEATURE_TOLERANCE * np.abs(expected).max()
    assert np.abs(expected).max() > 0
