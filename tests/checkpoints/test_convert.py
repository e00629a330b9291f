"""Converting PyTorch checkpoints: what is accepted, what is refused; failures write nothing."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys

import mlx.core as mx
import numpy as np
import pytest
from conftest import assert_close, full_disk_on_save, real_photos

import mlx_inception
from mlx_inception.checkpoints import convert, store
from mlx_inception.checkpoints.convert import convert_checkpoint, convert_file, read_state_dict
from mlx_inception.cli import main
from mlx_inception.errors import CheckpointError
from mlx_inception.model import InceptionV3, InceptionV3Config

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def state(reference_model):
    return {k: v.clone() for k, v in reference_model.state_dict().items()}


def save(state, path):
    torch.save(state, path)
    return path


def test_cli_convert_writes_a_directory_that_load_reads_with_torchvisions_logits(
    calibrated_checkpoint, calibrated_model, tmp_path, capsys
):
    out = tmp_path / "converted"
    assert main(["convert", str(calibrated_checkpoint), str(out)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["source"]["file"] == "inception_v3_calibrated.pth"
    digest = hashlib.sha256(calibrated_checkpoint.read_bytes()).hexdigest()
    assert config["source"]["sha256"] == digest
    model = mlx_inception.load(out)
    images = real_photos(139, 2)
    with torch.no_grad():
        expected = calibrated_model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
    assert_close(model(mx.array(images)), expected, "logits")  # RELATIVE_TOLERANCE: conftest


def test_conv_weights_are_transposed_by_role_not_by_shape(state, tmp_path):
    conversion = convert_file(save(state, tmp_path / "m.pth"))
    first = state["Conv2d_1a_3x3.conv.weight"].numpy()  # 32x3x3x3: ambiguous by shape
    np.testing.assert_array_equal(
        np.array(conversion.weights["Conv2d_1a_3x3.conv.weight"]), first.transpose(0, 2, 3, 1)
    )
    np.testing.assert_array_equal(
        np.array(conversion.weights["fc.weight"]), state["fc.weight"].numpy()
    )
    assert not any(k.endswith("num_batches_tracked") for k in conversion.weights)


def test_float16_storage_keeps_batchnorm_statistics_in_float32(reference_checkpoints, tmp_path):
    out, _ = convert_checkpoint(reference_checkpoints["safetensors"], tmp_path / "h",
                                dtype="float16")
    weights = mx.load(str(out / "model.safetensors"))
    assert weights["Mixed_5b.branch1x1.conv.weight"].dtype == mx.float16
    assert weights["Mixed_5b.branch1x1.bn.running_var"].dtype == mx.float32


def test_checkpoint_without_aux_head_loads_without_it(state, tmp_path):
    no_aux = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}
    conversion = convert_file(save(no_aux, tmp_path / "timm_like.pth"))
    assert conversion.config.aux_logits is False
    assert any("no AuxLogits" in note for note in conversion.notes)
    model = mlx_inception.load(tmp_path / "timm_like.pth")
    assert "AuxLogits" not in model


def test_1001_class_head_drops_the_background_class(state, tmp_path):
    wide = dict(state)
    for key in ("fc.weight", "fc.bias", "AuxLogits.fc.weight", "AuxLogits.fc.bias"):
        wide[key] = torch.cat([torch.full_like(state[key][:1], 7.0), state[key]])
    conversion = convert_file(save(wide, tmp_path / "tf1001.pth"))
    assert conversion.config.num_classes == 1000
    assert any("background" in note for note in conversion.notes)
    np.testing.assert_array_equal(np.array(conversion.weights["fc.bias"]),
                                  state["fc.bias"].numpy())


def test_other_class_counts_convert_without_imagenet_labels(state, tmp_path):
    small = dict(state)
    small["fc.weight"], small["fc.bias"] = state["fc.weight"][:10], state["fc.bias"][:10]
    small["AuxLogits.fc.weight"] = state["AuxLogits.fc.weight"][:10]
    small["AuxLogits.fc.bias"] = state["AuxLogits.fc.bias"][:10]
    conversion = convert_file(save(small, tmp_path / "ten.pth"))
    assert conversion.config.num_classes == 10 and conversion.config.labels is None


def test_wrapped_and_data_parallel_state_dicts_are_unwrapped(state, tmp_path):
    wrapped = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}
    conversion = convert_file(save(wrapped, tmp_path / "ddp.pth"))
    assert "Conv2d_1a_3x3.conv.weight" in conversion.weights


def test_torchvision_pretrained_file_name_turns_transform_input_on(state, tmp_path):
    conversion = convert_file(save(state, tmp_path / "inception_v3_google-0cc3c7bd.pth"))
    assert conversion.config.transform_input is True


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("Mixed_6b.branch7x7_2.conv.weight"), "missing 1 (Mixed_6b.branch7x7_2"),
        (lambda s: s.__setitem__("extra.weight", torch.zeros(3)), "unexpected 1 (extra.weight)"),
        (lambda s: s.__setitem__("Mixed_5b.branch1x1.bn.bias", torch.zeros(65)), "mis-shaped 1"),
        (lambda s: s.pop("fc.weight"), "no fc.weight"),
    ],
    ids=["missing", "unexpected", "mis-shaped", "not-inception"],
)
def test_mismatched_checkpoints_are_refused_with_one_line_and_nothing_written(
    state, tmp_path, edit, message
):
    broken = dict(state)
    edit(broken)
    src = save(broken, tmp_path / "broken.pth")
    out = tmp_path / "out"
    with pytest.raises(CheckpointError, match=re.escape(message)) as error:
        convert_checkpoint(src, out)
    assert "\n" not in str(error.value)
    assert not out.exists()


@pytest.mark.parametrize(
    "name, content, message",
    [
        # A text or HTML page saved under a checkpoint's name: torch.load's own error is a
        # bare "KeyError: 105" (the unpickler reading 'i' as an opcode).
        ("garbage.pth", b"this is not a pickle", "is not a PyTorch checkpoint: neither the zip "
         "archive torch.save writes nor a pickle"),
        ("empty.pth", b"", r"empty.pth is empty \(0 bytes\)"),
        ("empty.safetensors", b"", r"empty.safetensors is empty \(0 bytes\)"),
        ("garbage.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json", "not a readable"),
        ("weights.npz", b"PK", "unsupported checkpoint type .npz"),
    ],
)
def test_malformed_files_give_one_clear_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as error:
        read_state_dict(path)
    assert "\n" not in str(error.value)


def test_truncated_safetensors_is_refused(reference_checkpoints, tmp_path):
    data = reference_checkpoints["safetensors"].read_bytes()
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        read_state_dict(path)


def test_pickles_that_run_code_are_refused(tmp_path):
    import pickle

    class Exploit:
        def __reduce__(self):
            return (print, ("owned",))

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"fc.weight": Exploit()}))
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_state_dict(path)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        read_state_dict(tmp_path / "nope.pth")


def test_cli_reports_errors_in_one_line_with_exit_status_1(tmp_path, capsys):
    # In this process: `python -m mlx_inception` exits with main()'s status (tests/test_cli.py).
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"junk")
    assert main(["convert", str(bad), str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_failed_write_leaves_an_existing_directory_as_it_was(state, tmp_path, monkeypatch):
    out = tmp_path / "existing"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store.mx, "save_safetensors", fail)
    with pytest.raises(OSError, match="disk full"):
        convert_checkpoint(save(state, tmp_path / "m.pth"), out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_no_staging_folder(
    state, tmp_path, monkeypatch, capsys
):
    full_disk_on_save(monkeypatch, store, tmp_path)
    source = save(state, tmp_path / "m.pth")
    assert main(["convert", str(source), str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert error.startswith("error: cannot write ") and "model.safetensors" in error
    assert "Unable to write" in error and "MiB free there" in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.safetensors", "m.pth"]


def test_reading_pth_without_torch_says_how_to_get_it(tmp_path, monkeypatch):
    path = save({"a": torch.zeros(1)}, tmp_path / "m.pth")
    monkeypatch.setitem(sys.modules, "torch", None)
    expected = r"needs PyTorch: pip install 'mlx-inception\[torch\]'"
    with pytest.raises(CheckpointError, match=expected):
        read_state_dict(path)


def test_converting_again_into_the_same_directory_replaces_the_model_and_keeps_other_files(
    reference_checkpoints, tmp_path
):
    out = tmp_path / "again"
    convert_checkpoint(reference_checkpoints["pth"], out)
    (out / "README.md").write_text("my notes")
    convert_checkpoint(reference_checkpoints["safetensors"], out, dtype="float16")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json",
                                                      "model.safetensors"]
    saved = json.loads((out / "config.json").read_text())
    assert saved["source"]["file"] == "inception_v3_reference.safetensors"
    assert mx.load(str(out / "model.safetensors"))["fc.weight"].dtype == mx.float16


def test_a_crash_while_replacing_leaves_the_old_copy_whole_and_no_debris(
    reference_checkpoints, tmp_path, monkeypatch
):
    out = tmp_path / "crash"
    convert_checkpoint(reference_checkpoints["pth"], out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def power_cut(first, second):
        raise OSError("power cut")

    monkeypatch.setattr(store, "exchange_paths", power_cut)
    with pytest.raises(OSError, match="power cut"):
        convert_checkpoint(reference_checkpoints["safetensors"], out)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    mlx_inception.load(out)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_without_an_atomic_swap_config_json_is_replaced_last_and_never_removed(
    reference_checkpoints, tmp_path, monkeypatch
):
    out = tmp_path / "fallback"
    convert_checkpoint(reference_checkpoints["pth"], out)
    monkeypatch.setattr(store, "exchange_paths", lambda first, second: False)
    real_replace = store.os.replace

    def crash_on_config(src, dst):
        if str(dst).endswith("config.json"):
            raise OSError("power cut")
        return real_replace(src, dst)

    monkeypatch.setattr(store.os, "replace", crash_on_config)
    with pytest.raises(OSError, match="power cut"):
        convert_checkpoint(reference_checkpoints["safetensors"], out)
    monkeypatch.undo()
    assert json.loads((out / "config.json").read_text())["source"]["file"].endswith(".pth")
    mlx_inception.load(out)  # the same network: new weights with the old config still load


def test_converting_through_a_link_replaces_the_folder_it_names_and_keeps_the_link(
    reference_checkpoints, tmp_path
):
    real = tmp_path / "real"
    convert_checkpoint(reference_checkpoints["pth"], real)
    (tmp_path / "link").symlink_to(real)
    out, _ = convert_checkpoint(reference_checkpoints["safetensors"], tmp_path / "link")
    assert (tmp_path / "link").is_symlink() and out == real
    assert json.loads((real / "config.json").read_text())["source"]["file"].endswith(
        ".safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


def test_staging_folders_of_a_killed_convert_are_removed_by_the_next(
    reference_checkpoints, tmp_path
):
    out = tmp_path / "new"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    debris = [tmp_path / f".new-{dead}-abcd_123", tmp_path / ".new-zyxw9876"]
    for folder in debris:
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"half")
        os.utime(folder, (1, 1))
    others = [tmp_path / ".new-notours", tmp_path / ".newer-abcdefgh", tmp_path / "keep"]
    for folder in others:
        folder.mkdir()
        os.utime(folder, (1, 1))
    convert_checkpoint(reference_checkpoints["pth"], out)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["new", *(p.name for p in others)]
    )


def test_cli_turns_os_errors_into_one_line(reference_checkpoints, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    status = main(["convert", str(reference_checkpoints["pth"]), str(blocker / "out")])
    err = capsys.readouterr().err
    assert status == 1 and err.startswith("error: ") and err.count("\n") == 1


def test_timm_preprocessing_preset_is_timms_eval_transform(reference_checkpoints, tmp_path):
    out = tmp_path / "timm"
    assert main(["convert", str(reference_checkpoints["safetensors"]), str(out),
                 "--preprocessing", "timm"]) == 0
    preprocessing = json.loads((out / "config.json").read_text())["preprocessing"]
    assert preprocessing == {"resize_size": 341, "crop_size": 299, "interpolation": "bicubic",
                             "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}


def test_cli_checks_the_destination_before_reading_the_checkpoint(
    reference_checkpoints, tmp_path, capsys, monkeypatch
):
    def never(*args, **kwargs):
        raise AssertionError("the checkpoint was read before the destination was checked")

    monkeypatch.setattr(convert, "read_state_dict", never)
    (tmp_path / "afile").write_text("")
    for out, reason in ((tmp_path / "afile" / "sub", f"{tmp_path}/afile is a file, not a folder"),
                        (tmp_path / "afile", "it is a file, not a folder")):
        assert main(["convert", str(reference_checkpoints["safetensors"]), str(out)]) == 1
        assert capsys.readouterr().err == f"error: cannot write {out}: {reason}\n"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_cli_names_the_destination_asked_for_not_a_temporary_folder(
    reference_checkpoints, capsys
):
    assert main(["convert", str(reference_checkpoints["safetensors"]), "/proc/x"]) == 1
    assert capsys.readouterr().err.startswith(
        "error: cannot write /proc/x: cannot create files in /proc (")


def test_a_folder_is_not_taken_for_a_checkpoint_file(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(CheckpointError, match=r"photos is a folder, not a checkpoint file: pass "
                       r"a \.pth, \.pt, \.bin or \.safetensors file"):
        convert_checkpoint(tmp_path / "photos", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def own_weights_dir(module_tmp):
    """Random weights in this project's format, as `convert` or training writes them."""
    return store.save_model(InceptionV3(InceptionV3Config(aux_logits=False)),
                            module_tmp("own") / "weights")


def test_converting_this_projects_own_weights_says_they_are_already_converted(
    own_weights_dir, tmp_path
):
    folder = own_weights_dir
    expected = {
        folder: f"{folder} is already a converted weights folder: use it as it is "
                f"(--weights {folder}), there is nothing to convert",
        folder / "model.safetensors":
            f"{folder}/model.safetensors is already converted (mlx-inception's format): use its "
            f"folder (--weights {folder}), there is nothing to convert",
    }
    for source, message in expected.items():
        with pytest.raises(CheckpointError) as error:
            convert_checkpoint(source, tmp_path / "out")
        assert str(error.value) == message
    assert not (tmp_path / "out").exists()
