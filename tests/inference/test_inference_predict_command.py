"""``mlx-inception predict``: files, folders (recursive) and globs; table or JSON lines; bad files.

Runs the CLI in-process on real photos with a small (107-pixel) network saved as a weights
directory; the numbers it prints are compared with the Predictor's own.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from test_predictor import PHOTOS, small_model

from mlx_inception import cli
from mlx_inception.checkpoints.store import save_model
from mlx_inception.commands.predict import expand_paths
from mlx_inception.inference.predictor import Predictor


@pytest.fixture(scope="module")
def model():
    return small_model()


@pytest.fixture(scope="module")
def weights(model, module_tmp) -> Path:
    return save_model(model, module_tmp("predict") / "weights")


@pytest.fixture
def photos(tmp_path) -> Path:
    """photos/cat.png, photos/rocket.jpg, photos/more/coffee.png and a corrupt photos/bad.jpg."""
    root = tmp_path / "photos"
    (root / "more").mkdir(parents=True)
    shutil.copy(PHOTOS[0], root / "cat.png")
    shutil.copy(PHOTOS[2], root / "rocket.jpg")
    shutil.copy(PHOTOS[1], root / "more" / "coffee.png")
    (root / "bad.jpg").write_bytes(Path(PHOTOS[2]).read_bytes()[:2000])  # truncated JPEG
    return root


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    status = cli.main(["predict", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_json_lines_have_exactly_path_and_top_k_with_index_label_probability(
    weights, model, capsys
):
    status, out, err = run_cli(capsys, PHOTOS[0], "--weights", str(weights), "--json")
    assert status == 0, err
    [line] = json_lines(out)
    assert list(line) == ["path", "top_k"] and line["path"] == PHOTOS[0]
    assert len(line["top_k"]) == 5
    assert all(list(entry) == ["index", "label", "probability"] for entry in line["top_k"])
    [expected] = Predictor.from_source(weights).predict(PHOTOS[0])  # what the CLI builds
    assert [e["index"] for e in line["top_k"]] == [e.index for e in expected.top_k]
    assert [e["label"] for e in line["top_k"]] == [e.label for e in expected.top_k]
    # The same float32 network on the same input; 1e-6 allows a different batch composition.
    assert line["top_k"][0]["probability"] == pytest.approx(expected.top_k[0].probability, abs=1e-6)


def test_a_folder_is_searched_recursively_and_a_bad_file_gets_an_error_line(
    weights, photos, capsys
):
    status, out, _ = run_cli(
        capsys, str(photos), "--weights", str(weights), "--json", "--top-k", "1"
    )
    assert status == 1  # one file failed
    lines = {Path(line["path"]).name: line for line in json_lines(out)}
    assert set(lines) == {"bad.jpg", "cat.png", "coffee.png", "rocket.jpg"}
    assert list(lines["bad.jpg"]) == ["path", "error"]
    assert lines["bad.jpg"]["error"].startswith(f"{photos / 'bad.jpg'}: corrupt or truncated")
    assert all(len(lines[name]["top_k"]) == 1 for name in ("cat.png", "coffee.png", "rocket.jpg"))


def test_globs_are_expanded_including_double_star(weights, photos, capsys):
    status, out, err = run_cli(
        capsys, str(photos / "**" / "*.png"), "--weights", str(weights), "--json"
    )
    assert status == 0, err
    assert sorted(Path(line["path"]).name for line in json_lines(out)) == ["cat.png", "coffee.png"]


def test_the_default_output_is_a_readable_table(weights, model, capsys):
    status, out, _ = run_cli(capsys, PHOTOS[1], "--weights", str(weights), "--top-k", "3")
    assert status == 0
    [expected] = Predictor(model, top_k=3).predict(PHOTOS[1])
    lines = out.splitlines()
    assert lines[0] == PHOTOS[1]
    for line, entry in zip(lines[1:], expected.top_k, strict=True):
        rank, percent, index, label = line.split(maxsplit=3)
        assert (int(index), label) == (entry.index, entry.label)
        # Printed with two decimals: off by 0.005 points at most, plus the 1e-6 above.
        assert float(percent.rstrip("%")) == pytest.approx(entry.probability * 100, abs=0.006)
    assert len(lines) == 4


def test_failures_are_reported_on_stderr_and_the_exit_status_is_one(weights, photos, capsys):
    missing = str(photos / "nope.jpg")
    status, out, err = run_cli(
        capsys, str(photos / "cat.png"), missing, str(photos / "bad.jpg"), "--weights",
        str(weights),
    )  # fmt: skip
    assert status == 1
    assert out.splitlines()[0] == str(photos / "cat.png")
    assert f"error: {missing}: no such file or folder" in err
    assert f"error: {photos / 'bad.jpg'}: corrupt or truncated" in err
    assert "1 predicted, 2 failed" in err


def test_a_pattern_matching_nothing_is_an_error_line(weights, photos, capsys):
    status, out, _ = run_cli(capsys, str(photos / "*.tiff"), "--weights", str(weights), "--json")
    assert status == 1
    assert json_lines(out) == [
        {
            "path": str(photos / "*.tiff"),
            "error": f"{photos / '*.tiff'}: no files match this pattern",
        }
    ]


def test_half_precision_predictions_run(weights, capsys):
    status, out, err = run_cli(
        capsys, PHOTOS[0], "--weights", str(weights), "--json", "--dtype", "bfloat16"
    )
    assert status == 0, err
    [line] = json_lines(out)
    assert 0 < line["top_k"][0]["probability"] <= 1


def test_missing_weights_fail_with_one_line(photos, tmp_path, capsys):
    status, _, err = run_cli(capsys, str(photos / "cat.png"), "--weights", str(tmp_path / "w"))
    assert status == 1
    assert err.startswith("error: ") and err.count("\n") == 1


def test_paths_are_listed_once_in_the_order_given(photos):
    files, missing = expand_paths(
        [str(photos / "rocket.jpg"), str(photos), str(photos / "*.png"), os.fspath(photos / "x")]
    )
    names = [Path(f).name for f in files]
    assert names == ["rocket.jpg", "bad.jpg", "cat.png", "coffee.png"]
    assert missing == [(str(photos / "x"), f"{photos / 'x'}: no such file or folder")]


@pytest.fixture(scope="module")
def uncalibrated_weights(module_tmp) -> Path:
    """Random weights with unit BatchNorm statistics: logits about 1e10, beyond float16."""
    import mlx.core as mx
    from test_predictor import SMALL

    from mlx_inception.model import InceptionV3, InceptionV3Config

    mx.random.seed(0)
    config = InceptionV3Config(aux_logits=False, preprocessing=SMALL)
    return save_model(InceptionV3(config), module_tmp("uncalibrated") / "weights")


def strict_json(line: str) -> dict:
    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(line, parse_constant=refuse)


def test_an_output_that_overflowed_is_an_error_never_a_nan_probability(
    uncalibrated_weights, capsys
):
    status, out, err = run_cli(capsys, PHOTOS[0], "--weights", str(uncalibrated_weights),
                               "--json", "--dtype", "float16")
    assert status == 1
    [line] = [strict_json(line) for line in out.splitlines()]
    assert line == {"path": PHOTOS[0], "error": f"{PHOTOS[0]}: the network's output is not "
                    "finite (NaN or infinity); float16 overflowed (its largest value is 65504): "
                    "run in float32 or bfloat16 (--dtype)"}
    status, out, err = run_cli(capsys, PHOTOS[0], "--weights", str(uncalibrated_weights),
                               "--dtype", "float16")
    assert status == 1 and out == "" and "nan" not in err
    assert err.splitlines()[0] == f"error: {line['error']}"
    # In float32 the same network's huge logits are finite: a (certain) prediction.
    status, out, _ = run_cli(capsys, PHOTOS[0], "--weights", str(uncalibrated_weights), "--json")
    assert status == 0 and strict_json(out)["top_k"][0]["probability"] == pytest.approx(1.0)
