"""Multi-crop views, folder-to-class mapping and top-1/top-5 evaluation on a small real tree.

The crops are checked pixel for pixel against torchvision's own functional ops (resize,
five_crop, ten_crop, hflip, crop) composed as each protocol defines them. Evaluation runs a
75-pixel network (the smallest Inception-v3 input) so that 144 crops per image stay fast.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_predictor import small_model

from mlx_inception import cli
from mlx_inception.checkpoints.store import save_model
from mlx_inception.data.folder import ImageFolder
from mlx_inception.data.images import load_image
from mlx_inception.data.labels import imagenet_classes, imagenet_synsets
from mlx_inception.data.transforms import preprocess
from mlx_inception.errors import DataError
from mlx_inception.inference.crops import crop_images, multi_crop, multi_scale_sizes
from mlx_inception.inference.evaluate import class_mapping, evaluate
from mlx_inception.inference.predictor import Predictor
from mlx_inception.model import Preprocessing

torch = pytest.importorskip("torch")
F = pytest.importorskip("torchvision.transforms.functional")
skimage_data = pytest.importorskip("skimage.data")
SKIMAGE = os.path.dirname(skimage_data.__file__)
TINY = Preprocessing(resize_size=86, crop_size=75)
BILINEAR = F.InterpolationMode.BILINEAR


@pytest.fixture(scope="module")
def chelsea() -> Image.Image:
    return load_image(os.path.join(SKIMAGE, "chelsea.png"))


def as_arrays(images) -> list[np.ndarray]:
    return [np.asarray(image) for image in images]


def assert_same_images(actual, expected):
    assert len(actual) == len(expected)
    for i, (a, b) in enumerate(zip(as_arrays(actual), as_arrays(expected), strict=True)):
        assert a.shape == b.shape, f"crop {i}: {a.shape} != {b.shape}"
        np.testing.assert_array_equal(a, b, err_msg=f"crop {i}")


# --- the crop protocols ----------------------------------------------------------------------


def test_one_crop_is_the_models_preprocessing(chelsea):
    np.testing.assert_array_equal(multi_crop(chelsea, TINY, 1)[0], preprocess(chelsea, TINY))


def test_ten_crops_are_torchvisions_ten_crop_after_the_resize(chelsea):
    resized = F.resize(chelsea, 342, interpolation=BILINEAR)
    assert_same_images(crop_images(chelsea, Preprocessing(), 10), F.ten_crop(resized, 299))


def googlenet_six(square: Image.Image, size: int) -> list[Image.Image]:
    """GoogLeNet's crops of one square: 4 corners and centre, and the square resized."""
    return list(F.five_crop(square, size)) + [F.resize(square, [size, size], BILINEAR)]


def test_twelve_crops_are_six_googlenet_crops_of_the_centre_square_and_their_mirrors(chelsea):
    resized = F.resize(chelsea, 342, interpolation=BILINEAR)  # 514 x 342
    centre = F.center_crop(resized, 342)
    expected = googlenet_six(centre, 299) + googlenet_six(F.hflip(centre), 299)
    assert_same_images(crop_images(chelsea, Preprocessing(), 12), expected)


def test_googlenet_scales_for_299_pixels_are_342_384_427_470():
    # 256, 288, 320, 352 for 224-pixel crops, scaled by 299 / 224.
    assert multi_scale_sizes(299) == [342, 384, 427, 470]
    assert multi_scale_sizes(224) == [256, 288, 320, 352]


@pytest.mark.parametrize("portrait", [False, True], ids=["landscape", "portrait"])
def test_144_crops_are_4_scales_3_squares_6_crops_2_mirrors(chelsea, portrait):
    image = chelsea.transpose(Image.Transpose.ROTATE_90) if portrait else chelsea
    expected = []
    for scale in multi_scale_sizes(75):
        resized = F.resize(image, scale, interpolation=BILINEAR)
        width, height = resized.size
        side = min(width, height)
        for offset in (0, round((max(width, height) - side) / 2), max(width, height) - side):
            # left / centre / right squares, or top / middle / bottom for a portrait image
            top, left = (0, offset) if width >= height else (offset, 0)
            square = F.crop(resized, top, left, side, side)
            expected += googlenet_six(square, 75) + googlenet_six(F.hflip(square), 75)
    actual = crop_images(image, TINY, 144)
    assert len(actual) == 144
    assert_same_images(actual, expected)


def test_multi_crop_gives_normalised_float32_input(chelsea):
    crops = multi_crop(chelsea, TINY, 12)
    assert crops.shape == (12, 75, 75, 3) and crops.dtype == np.float32
    images = crop_images(chelsea, TINY, 12)
    np.testing.assert_array_equal(crops[5], preprocess(images[5], Preprocessing(75, 75)))


# --- folder names to outputs ----------------------------------------------------------------


def test_synset_folders_map_to_their_imagenet_output():
    mapping, how = class_mapping(["n02123045", "n01440764"], 1000, imagenet_classes())
    assert mapping == {"n02123045": 281, "n01440764": 0} and how == "ImageNet synset ids"


def test_shipped_synsets_are_the_1000_sorted_wordnet_ids_in_output_order():
    synsets = imagenet_synsets()
    assert len(set(synsets)) == 1000 and synsets == sorted(synsets)
    names = imagenet_classes()
    # Spot checks across the list: each synset's well-known class sits at its output index.
    for synset, name in [
        ("n01440764", "tench"),
        ("n02123045", "tabby"),
        ("n03837869", "obelisk"),
        ("n04589890", "window screen"),
        ("n15075141", "toilet tissue"),
    ]:
        assert names[synsets.index(synset)] == name


def test_unknown_synsets_and_non_imagenet_heads_are_refused():
    with pytest.raises(DataError, match="not ImageNet-1k synsets: n00000001"):
        class_mapping(["n00000001", "n01440764"], 1000, imagenet_classes())
    with pytest.raises(DataError, match="model has 10 outputs"):
        class_mapping(["n01440764"], 10, None)


def test_index_folders_map_to_that_output():
    assert class_mapping(["7", "042"], 100, None)[0] == {"7": 7, "042": 42}
    with pytest.raises(DataError, match="not output indices of a 10-class model"):
        class_mapping(["3", "12"], 10, None)


def test_class_name_folders_map_ignoring_case_and_separators():
    mapping, how = class_mapping(["Great_White-Shark", "tench"], 1000, imagenet_classes())
    assert mapping == {"Great_White-Shark": 2, "tench": 0} and how == "class names"


def test_ambiguous_class_names_ask_for_synset_ids():
    # A label list where one name means two outputs (as in ImageNet's original synset words,
    # which has two "crane"s; the shipped torchvision names are unique: "crane", "crane bird").
    with pytest.raises(DataError, match="crane name more than one output"):
        class_mapping(["crane", "tench"], 3, ["crane", "tench", "crane"])
    assert class_mapping(["crane", "crane_bird"], 1000, imagenet_classes())[0] == {
        "crane": 517,
        "crane_bird": 134,
    }


def test_other_names_map_by_sorted_position_when_counts_match():
    mapping, how = class_mapping(["cat", "dog"], 2, ["kitty", "puppy"])
    assert mapping == {"cat": 0, "dog": 1} and how == "sorted folder order"
    with pytest.raises(DataError, match="cannot map 3 class folders to the model's 2 outputs"):
        class_mapping(["a", "b", "c"], 2, None)


# --- evaluation on a small tree of real photos ----------------------------------------------


@pytest.fixture(scope="module")
def tiny_model():
    return small_model(preprocessing=TINY, seed=1)


@pytest.fixture(scope="module")
def tiny_weights(tiny_model, module_tmp) -> Path:
    return save_model(tiny_model, module_tmp("tiny") / "weights")


def photo_crops() -> list[tuple[str, Image.Image]]:
    """Four small crops of real photos, in a portrait and two landscape shapes."""
    chelsea = load_image(os.path.join(SKIMAGE, "chelsea.png"))
    coffee = load_image(os.path.join(SKIMAGE, "coffee.png"))
    rocket = load_image(os.path.join(SKIMAGE, "rocket.jpg"))
    return [
        ("cat.png", chelsea.crop((100, 20, 260, 140))),
        ("cup.jpg", coffee.crop((150, 50, 390, 230))),
        ("rocket.png", rocket.crop((200, 40, 320, 200))),
        ("cat_face.webp", chelsea.crop((140, 30, 240, 130))),
    ]


def build_tree(root: Path, predictor: Predictor, ranks: list[int]) -> dict[str, int]:
    """Put each photo crop in the synset folder of the class its prediction ranks ``rank``-th.

    Rank 0 is counted correct for top-1 and top-5, ranks 1-4 for top-5 only, later ranks for
    neither; returns file name -> the rank used.
    """
    synsets = imagenet_synsets()
    used = {}
    staging = root.parent / f"{root.name}-staging"
    staging.mkdir()
    for (name, image), rank in zip(photo_crops(), ranks, strict=False):
        # Predict the saved file, not the image in memory: JPEG/WebP change the pixels.
        image.save(staging / name, quality=90)
        [prediction] = predictor.predict(staging / name)
        target = int(np.argsort(-prediction.probabilities, kind="stable")[rank])
        folder = root / synsets[target]
        folder.mkdir(parents=True, exist_ok=True)
        (staging / name).rename(folder / name)
        used[name] = rank
    return used


@pytest.mark.parametrize("crops", [1, 10, 12])
def test_evaluation_counts_top1_and_top5_hits_of_the_crop_averaged_softmax(
    tiny_model, tmp_path, crops
):
    predictor = Predictor(tiny_model, batch_size=16, crops=crops)
    build_tree(tmp_path, predictor, ranks=[0, 3, 999, 0])
    mapping, how = class_mapping(sorted(p.name for p in tmp_path.iterdir()), 1000, predictor.labels)
    folder = ImageFolder(tmp_path, class_to_index=mapping, min_classes=1)
    result = evaluate(predictor, folder, mapping=how)
    assert (result.count, result.top1_correct, result.top5_correct) == (4, 2, 3)
    assert result.top1 == 0.5 and result.top5 == 0.75 and result.failed == []


def test_crop_averaging_is_the_mean_of_each_crops_softmax(tiny_model, chelsea):
    import mlx.core as mx

    predictor = Predictor(tiny_model, batch_size=4, crops=10)
    [prediction] = predictor.predict(chelsea)
    logits = predictor.model(mx.array(multi_crop(chelsea, TINY, 10)))  # the network it runs
    expected = np.array(mx.softmax(logits, axis=-1)).mean(axis=0)
    # The same network on the same crops, in batches of 4 instead of 10: float32 rounding only.
    np.testing.assert_allclose(prediction.probabilities, expected, atol=1e-6)


def test_unreadable_images_are_listed_and_left_out_of_the_counts(tiny_model, tmp_path):
    predictor = Predictor(tiny_model, batch_size=4)
    build_tree(tmp_path, predictor, ranks=[0, 999])
    some_class = sorted(tmp_path.iterdir())[0]
    (some_class / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0")
    (some_class / "empty.jpg").write_bytes(b"")
    mapping, _ = class_mapping([p.name for p in tmp_path.iterdir()], 1000, None)
    result = evaluate(predictor, ImageFolder(tmp_path, mapping, min_classes=1))
    assert (result.count, result.top1_correct) == (2, 1)
    assert sorted(Path(path).name for path, _ in result.failed) == ["empty.jpg", "truncated.png"]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    status = cli.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_evaluate_command_prints_json_with_top1_top5_and_count(
    tiny_model, tiny_weights, tmp_path, capsys
):
    build_tree(tmp_path, Predictor(tiny_model), ranks=[0, 2, 999])
    status, out, err = run_cli(
        capsys, "evaluate", "--data", str(tmp_path), "--weights", str(tiny_weights), "--json"
    )
    assert status == 0, err
    result = json.loads(out)
    assert result["count"] == 3 and result["failed"] == []
    assert result["top1"] == pytest.approx(1 / 3) and result["top5"] == pytest.approx(2 / 3)
    assert result["class_mapping"] == "ImageNet synset ids"


@pytest.mark.slow  # 144 forward passes per image, for the tree and for the command
def test_evaluate_command_runs_the_144_crop_protocol(tiny_model, tiny_weights, tmp_path, capsys):
    predictor = Predictor(tiny_model, batch_size=48, crops=144)
    build_tree(tmp_path, predictor, ranks=[0])
    status, out, err = run_cli(
        capsys, "evaluate", "--data", str(tmp_path), "--weights", str(tiny_weights),
        "--crops", "144", "--batch-size", "48",
    )  # fmt: skip
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].endswith("1 classes (matched by ImageNet synset ids), 1 images, 144 crops")
    assert lines[1] == "top-1 accuracy 100.00%  (1/1)  error   0.00%"
    assert lines[2] == "top-5 accuracy 100.00%  (1/1)  error   0.00%"


def test_evaluate_command_exits_non_zero_when_an_image_is_unreadable(
    tiny_model, tiny_weights, tmp_path, capsys
):
    build_tree(tmp_path, Predictor(tiny_model), ranks=[0, 1])
    bad = sorted(tmp_path.iterdir())[0] / "notes.jpg"
    bad.write_text("not an image")
    status, out, err = run_cli(
        capsys, "evaluate", "--data", str(tmp_path), "--weights", str(tiny_weights), "--json"
    )
    assert status == 1
    result = json.loads(out)
    assert result["count"] == 2 and result["top1"] == 0.5
    assert result["failed"] == [{"path": str(bad), "error": f"{bad}: not an image file Pillow "
                                 "can read (corrupt or another format)"}]  # fmt: skip
    assert f"error: {bad}: not an image file" in err


def test_evaluate_command_refuses_a_folder_without_classes_before_loading_weights(tmp_path, capsys):
    status, _, err = run_cli(
        capsys, "evaluate", "--data", str(tmp_path), "--weights", str(tmp_path / "none")
    )
    assert status == 1
    assert err.startswith(f"error: {tmp_path}: no class folders")


def test_evaluate_command_with_no_readable_image_reports_no_accuracy(
    tiny_weights, tmp_path, capsys
):
    (tmp_path / "tabby").mkdir()
    bad = tmp_path / "tabby" / "notes.png"
    bad.write_text("not an image")
    status, out, err = run_cli(capsys, "evaluate", "--data", str(tmp_path), "--weights",
                               str(tiny_weights), "--json", "--quiet")
    assert status == 1
    result = json.loads(out)
    # No image, no accuracy: null, not a 0% that reads as "every prediction was wrong".
    assert (result["top1"], result["top5"], result["count"]) == (None, None, 0)
    assert err.splitlines()[-1] == f"error: no images were evaluated in {tmp_path} (all 1 failed)"

    status, out, err = run_cli(capsys, "evaluate", "--data", str(tmp_path), "--weights",
                               str(tiny_weights), "--quiet")
    assert status == 1 and out == "" and "accuracy" not in err
    assert err.splitlines() == [f"error: {bad}: not an image file Pillow can read (corrupt or "
                                "another format)",
                                f"error: no images were evaluated in {tmp_path} (all 1 failed)"]
