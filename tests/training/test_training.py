"""The trainer on real data (scikit-learn's handwritten digits at 75 px): the recipe, learning,
metrics and curves, checkpoints, exact resumption, Ctrl-C, fine-tuning, mixed precision, and
the errors bad data gets.

CPU time is scarce in CI, so most runs here are a few eager steps of 4 images; the learning
run is compiled (mx.compile) and trains a new head on a frozen backbone, the cheapest setting
in which a network learns within a minute on two cores.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import full_disk_on_save
from mlx.utils import tree_flatten
from PIL import Image
from test_training_data import make_digits_folder

import mlx_inception
from mlx_inception import InceptionV3, InceptionV3Config
from mlx_inception.checkpoints import store
from mlx_inception.checkpoints.store import load_weights, model_weights, save_model
from mlx_inception.cli import main as cli_main
from mlx_inception.data.folder import ImageFolder
from mlx_inception.data.images import load_image
from mlx_inception.data.transforms import preprocess
from mlx_inception.errors import CheckpointError, DataError
from mlx_inception.training import checkpoint as checkpoints
from mlx_inception.training import trainer as trainer_module
from mlx_inception.training.history import read_metrics
from mlx_inception.training.network import (
    build_network,
    is_decayed,
    preprocessing_for,
    set_batchnorm_momentum,
)
from mlx_inception.training.recipe import ConfigError, load_config_file, resolve
from mlx_inception.training.step import dropout_keys, ema_decay_at
from mlx_inception.training.trainer import Trainer

# Settings shared by the small eager runs: 4 images per step, so every run reuses the same
# shapes; a high BatchNorm momentum so a few steps move the running statistics.
SMALL = dict(image_size=75, batch_size=4, bn_momentum=0.1, workers=2, compile=False,
             base_learning_rate=1e-6, reference_batch=4, lr_decay_epochs=1.0)


@pytest.fixture(scope="module")
def tiny_digits(module_tmp) -> Path:
    """4 digits x 2 training images (2 steps of 4 per epoch) and 1 validation image each."""
    return make_digits_folder(module_tmp("tiny_digits"), 4, 2, 1)


def small_config(data: Path, out: Path, **changes):
    settings = dict(SMALL, data=str(data / "train"), val=str(data / "val"), out=str(out))
    settings.update(changes)
    return resolve(settings)


def trained_arrays(run_dir: Path) -> dict[str, np.ndarray]:
    """Raw weights, statistics, optimizer state and moving average of a run's last checkpoint."""
    arrays, _ = checkpoints.load_checkpoint(run_dir / "last")
    return {k: np.array(v) for k, v in arrays.items()}


def assert_bit_identical(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not np.array_equal(a[k], b[k])]
    assert not different, f"{len(different)} arrays differ, e.g. {different[:3]}"


def clone_run(source: Path, destination: Path) -> Path:
    """Copy a run directory cheaply: checkpoint files are hard links (the trainer never changes
    a checkpoint file in place, it writes new folders), everything else is copied."""

    def copy(src: str, dst: str) -> None:
        if CHECKPOINTS_FOLDER in Path(src).relative_to(source).parts:
            os.link(src, dst)
        else:
            shutil.copy2(src, dst)

    shutil.copytree(source, destination, symlinks=True, copy_function=copy)
    return destination


CHECKPOINTS_FOLDER = "checkpoints"


def metric_records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


TIMING = {"images_per_second", "train_seconds", "data_wait_seconds", "data_wait_fraction",
          "data_ready_fraction"}


# --- the recipe -----------------------------------------------------------------------------


def test_paper_recipe_is_the_default_without_init_but_for_clipping():
    config, _ = resolve({"data": "d", "out": "o"})
    assert config.recipe == "scratch"
    assert (config.rmsprop_decay, config.rmsprop_momentum, config.rmsprop_epsilon) == (
        0.9, 0.9, 1.0)
    assert (config.base_learning_rate, config.lr_decay_rate, config.lr_decay_epochs) == (
        0.045, 0.94, 2.0)
    assert (config.clip_norm, config.label_smoothing, config.aux_weight) == (0.0, 0.1, 0.4)
    assert resolve({"data": "d", "out": "o", "recipe": "paper"})[0].clip_norm == 2.0
    assert (config.weight_decay, config.ema_decay, config.dropout) == (4e-5, 0.9999, 0.2)
    assert config.bn_momentum == pytest.approx(1 - 0.9997)
    assert config.image_size == 299 and config.aux_logits is True


def test_the_step_is_compiled_by_default_on_a_gpu_only(monkeypatch):
    from mlx_inception.training import recipe

    for device, expected in ((mx.Device(mx.cpu), False), (mx.Device(mx.gpu), True)):
        monkeypatch.setattr(recipe.mx, "default_device", lambda device=device: device)
        config, notes = resolve({"data": "d", "out": "o"})
        assert config.compile is expected
        assert any(("compiled on the GPU" if expected else "eagerly on the CPU") in note
                   for note in notes)
    for explicit in (True, False):  # a flag always wins
        config, notes = resolve({"data": "d", "out": "o", "compile": explicit})
        assert config.compile is explicit and not any("compile" in note for note in notes)


def test_a_runs_config_reused_with_config_derives_again_what_was_not_given(tmp_path):
    config, _ = resolve({"data": "d", "out": "o", "batch_size": 1600, "label_smoothing": 0.2})
    assert config.given == ["batch_size", "data", "label_smoothing", "out"]
    path = tmp_path / "train_config.json"
    path.write_text(json.dumps(config.to_dict()))  # as the trainer writes it
    reused = load_config_file(path)
    assert reused == {"batch_size": 1600, "data": str(Path("d").absolute()),
                      "label_smoothing": 0.2, "out": str(Path("o").absolute())}
    again, _ = resolve({**reused, "batch_size": 3200})
    assert again.learning_rate == pytest.approx(0.045 * 3200 / 1600)  # scaled, not 1600's
    assert again.label_smoothing == 0.2
    fine_tune, _ = resolve({**reused, "init": "w"})  # the fine-tuning defaults apply
    assert fine_tune.recipe == "fine-tune" and fine_tune.ema_decay == 0.0


def test_learning_rate_is_tf_slims_on_one_machine_and_the_papers_at_its_batch():
    def rate(**settings):
        return resolve({"data": "d", "out": "o", **settings})[0].learning_rate

    # TF-slim's train_image_classifier.py: 0.01 at batch 32, scaled linearly with the batch...
    assert rate(batch_size=32) == pytest.approx(0.01)
    assert rate(batch_size=64) == pytest.approx(0.02)
    # ...up to the paper's 0.045, used with 50 replicas x 32 = 1600 images per update, and
    # scaled linearly above that batch.
    assert rate(batch_size=144) == pytest.approx(0.045)
    assert rate(batch_size=1600) == pytest.approx(0.045)
    assert rate(batch_size=3200) == pytest.approx(0.09)
    # The paper's recipe scales 0.045 linearly either way; a rule given is a rule kept.
    assert rate(batch_size=32, recipe="paper") == pytest.approx(0.045 * 32 / 1600)
    assert rate(batch_size=32, base_learning_rate=0.1, reference_batch=64) == pytest.approx(0.05)
    assert rate(learning_rate=0.3) == 0.3


def test_fine_tuning_recipe_applies_when_starting_from_weights():
    head_only, _ = resolve({"data": "d", "out": "o", "init": "w"})
    assert head_only.recipe == "fine-tune" and head_only.freeze == "backbone"
    assert head_only.learning_rate == pytest.approx(0.01)  # TF-slim's flowers stage 1 at 32
    assert (head_only.lr_decay_epochs, head_only.ema_decay, head_only.label_smoothing) == (
        0.0, 0.0, 0.0)
    every_layer, _ = resolve({"data": "d", "out": "o", "init": "w", "freeze": "none"})
    assert every_layer.learning_rate == pytest.approx(1e-4)  # stage 2, all layers
    overridden, _ = resolve({"data": "d", "out": "o", "init": "w", "label_smoothing": 0.1})
    assert overridden.label_smoothing == 0.1


def test_aux_head_is_left_out_below_299_px_with_a_note():
    config, notes = resolve({"data": "d", "out": "o", "image_size": 75})
    assert config.aux_logits is False
    assert any("auxiliary head" in note and "299" in note for note in notes)
    with pytest.raises(ConfigError, match="at least 299"):
        resolve({"data": "d", "out": "o", "image_size": 150, "aux_logits": True})


@pytest.mark.parametrize(
    ("stem", "smallest", "smallest_with_aux"), [("299", 75, 299), ("151", 39, 151), ("79", 21, 77)]
)
def test_minimum_sizes_follow_the_stem(stem, smallest, smallest_with_aux):
    # The sizes are the model's own minimum_input_size for each stem (section 9's networks).
    def resolved(size, **extra):
        return resolve({"data": "d", "out": "o", "stem": stem, "image_size": size, **extra})[0]

    assert resolved(smallest).image_size == smallest
    with pytest.raises(ConfigError, match=f"minimum of {smallest} px for stem {stem}"):
        resolved(smallest - 1)
    assert resolved(smallest_with_aux).aux_logits is True
    assert resolved(smallest_with_aux - 1).aux_logits is False
    with pytest.raises(ConfigError, match=f"at least {smallest_with_aux} px with stem {stem}"):
        resolved(smallest_with_aux - 1, aux_logits=True)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"image_size": 64}, "minimum of 75"),
        ({"batch_size": 6, "micro_batches": 4}, "micro-batches"),
        ({"batch_size": 2, "micro_batches": 2}, "at least 2 images"),
        ({"dtype": "float16"}, "float32 or bfloat16"),
        ({"crop_scale": [0.5, 0.2]}, "crop_scale"),
        ({"unknown_setting": 1}, "unknown training setting"),
        # Values a config file can hold that used to end in a traceback.
        ({"epochs": "ten"}, "epochs must be a whole number"),
        ({"crop_scale": [0.5]}, "crop_scale must be a pair of numbers"),
        ({"reference_batch": 0}, "--reference-batch must be at least 1"),
        ({"rmsprop_decay": 1.5}, r"--rmsprop-decay must be in \[0, 1\)"),
        ({"bn_momentum": float("nan")}, r"--bn-momentum must be in \[0, 1\]"),
        ({"seed": -1}, "--seed must be 0 or more"),
        ({"batch_size": 0}, "--batch-size must be at least 2"),
    ],
)
def test_invalid_settings_are_refused_in_one_line(settings, message):
    with pytest.raises(ConfigError, match=message) as error:
        resolve({"data": "d", "out": "o", **settings})
    assert "\n" not in str(error.value)


def test_batch_must_split_evenly_over_processes():
    with pytest.raises(ConfigError, match="multiple of 3"):
        resolve({"data": "d", "out": "o", "batch_size": 32}, world_size=3)


def test_weight_decay_covers_conv_and_fc_weights_only():
    assert is_decayed("Mixed_5b.branch1x1.conv.weight") and is_decayed("fc.weight")
    assert is_decayed("AuxLogits.fc.weight")
    assert not is_decayed("fc.bias") and not is_decayed("Mixed_5b.branch1x1.bn.weight")


def test_moving_average_decay_follows_tensorflows_num_updates_rule():
    # min(decay, (1 + n) / (10 + n)): 0.1 at the first update, 0.9999 only after ~90,000.
    assert ema_decay_at(0.9999, mx.array(0)).item() == pytest.approx(0.1)
    assert ema_decay_at(0.9999, mx.array(90)).item() == pytest.approx(91 / 100)
    assert ema_decay_at(0.9999, mx.array(10**6)).item() == pytest.approx(0.9999)


def test_dropout_keys_depend_on_the_share_of_the_global_batch_not_on_its_layout():
    # Process 1 of 2 holding one share draws what one process holding both draws for its second
    # micro-batch; another step or seed draws something else.
    alone = dropout_keys(seed=7, step=5, rank=0, micro_batches=2)
    assert np.array_equal(np.array(dropout_keys(7, 5, rank=1, micro_batches=1)[0]),
                          np.array(alone[1]))
    assert not np.array_equal(np.array(alone[0]), np.array(alone[1]))
    assert not np.array_equal(np.array(dropout_keys(7, 6, 0, 2)), np.array(alone))
    assert not np.array_equal(np.array(dropout_keys(8, 5, 0, 2)), np.array(alone))


# --- learning: a new head on a frozen backbone, compiled ----------------------------------


@pytest.fixture(scope="module")
def learning_run(module_tmp):
    """Fine-tune (the fine-tuning recipe's defaults) on 5 digits x 30 images for 8 epochs.

    No pretrained weights exist offline, so the initial weights are torchvision's random
    initialisation with BatchNorm statistics measured on 48 training images (a random network
    with its default statistics of 0 and 1 gives activations around 1e7 in evaluation mode).
    The frozen backbone is a fixed random feature extractor; the zero-initialised head learns.
    """
    root = module_tmp("learning")
    data = make_digits_folder(root / "digits", 5, 30, 10)
    mx.random.seed(0)
    network = InceptionV3(InceptionV3Config(aux_logits=False,
                                            preprocessing=preprocessing_for(75)))
    set_batchnorm_momentum(network, 1.0)  # running statistics := this batch's statistics
    network.train()
    samples = ImageFolder(data / "train").samples
    chosen = np.random.default_rng(0).choice(len(samples), 48, replace=False)
    batch = np.stack([preprocess(load_image(samples[i][0]), network.config.preprocessing)
                      for i in chosen])
    network(mx.array(batch))
    set_batchnorm_momentum(network, 0.1)
    network.eval()
    save_model(network, root / "init")
    config, notes = resolve(dict(
        data=str(data / "train"), val=str(data / "val"), out=str(root / "run"),
        init=str(root / "init"), image_size=75, batch_size=8, epochs=8, workers=2,
        learning_rate=0.001,  # random features are larger than ImageNet ones: below the 0.0025 rule
        crop_scale=[0.8, 1.0], flip=False,  # digits: mild crops, never mirrored
        ema_decay=0.99,  # exercise evaluation with the moving average
        compile=True,  # the default on a GPU; exercised here on the CPU
    ))
    trainer = Trainer(config, notes=notes, show_progress=False)
    summary = trainer.fit()
    return trainer.config, summary, root / "run"


@pytest.mark.slow
def test_fine_tuning_learns_digits_well_above_chance(learning_run):
    _, summary, run_dir = learning_run
    records = metric_records(run_dir)
    # Chance is 20% on 5 classes; measured 52% after 8 epochs (train loss 1.71 -> 1.29).
    assert records[-1]["val_top1"] >= 0.4
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert summary["best_val_top1"] == max(r["val_top1"] for r in records)


@pytest.mark.slow
def test_every_epoch_records_loss_accuracy_and_throughput_in_metrics_jsonl(learning_run):
    config, _, run_dir = learning_run
    records = metric_records(run_dir)
    assert [r["epoch"] for r in records] == list(range(1, config.epochs + 1))
    for record in records:
        for key in ("train_loss", "val_top1", "val_top5", "images_per_second", "learning_rate"):
            assert isinstance(record[key], float) and np.isfinite(record[key])
        assert 0.0 <= record["val_top1"] <= record["val_top5"] <= 1.0
        assert record["images_per_second"] > 0


@pytest.mark.slow
def test_data_loading_is_measured_in_every_epochs_metrics(learning_run):
    # How long the step waited for decoded images, and how many batches were ready before the
    # step asked, are recorded for the README's measurement; their values depend on the
    # machine's load, so only their consistency is asserted (the prefetching behaviour itself is
    # tested in test_training_data.py without timing).
    _, _, run_dir = learning_run
    for record in metric_records(run_dir):
        assert 0.0 <= record["data_wait_seconds"] <= record["train_seconds"]
        assert record["data_wait_fraction"] == pytest.approx(
            record["data_wait_seconds"] / record["train_seconds"])
        assert 0.0 <= record["data_ready_fraction"] <= 1.0


@pytest.mark.slow
def test_curves_are_drawn_as_a_png(learning_run):
    _, _, run_dir = learning_run
    with Image.open(run_dir / "curves.png") as image:
        assert image.format == "PNG" and image.size == (1100, 440)
        colours = {c for _, c in image.convert("RGB").getcolors(maxcolors=1 << 16)}
    assert (255, 127, 14) in colours and (31, 119, 180) in colours  # validation, train lines


@pytest.mark.slow
def test_resolved_configuration_is_saved_in_the_run_directory(learning_run):
    config, _, run_dir = learning_run
    saved = json.loads((run_dir / "train_config.json").read_text())
    assert saved == config.to_dict()
    assert (saved["recipe"], saved["freeze"], saved["aux_logits"], saved["stem"]) == (
        "fine-tune", "backbone", False, "299")  # resolved (the network from --init's weights)


@pytest.mark.slow
def test_best_checkpoint_loads_with_mlx_inception_load_and_reproduces_its_accuracy(learning_run):
    _, summary, run_dir = learning_run
    model = mlx_inception.load(run_dir / "best")
    assert model.config.labels == [f"digit_{k}" for k in range(5)]
    assert model.config.preprocessing.crop_size == 75
    val = ImageFolder(run_dir.parent / "digits" / "val", min_classes=1)
    images = np.stack([preprocess(load_image(p), model.config.preprocessing)
                       for p, _ in val.samples])
    predictions = np.array(mx.argmax(model(mx.array(images)), axis=-1))
    accuracy = float(np.mean(predictions == np.array(val.targets)))
    assert accuracy == pytest.approx(summary["best_val_top1"], abs=1e-9)


@pytest.mark.slow
def test_frozen_backbone_and_its_statistics_did_not_change(learning_run):
    _, _, run_dir = learning_run
    initial, _ = load_weights(run_dir.parent / "init")
    trained = trained_arrays(run_dir)
    backbone = [k for k in initial if not k.startswith(("fc.", "AuxLogits."))]
    assert backbone
    for key in backbone:
        assert np.array_equal(np.array(initial[key]), trained[f"model/{key}"]), key
    assert np.abs(trained["model/fc.weight"]).max() > 0  # the zero-initialised head moved


# --- checkpoints and exact resumption --------------------------------------------------------


@pytest.fixture(scope="module")
def straight_run(tiny_digits, module_tmp):
    """Two epochs of two steps, uninterrupted."""
    out = module_tmp("straight") / "run"
    config, notes = small_config(tiny_digits, out, epochs=2)
    Trainer(config, notes=notes, show_progress=False).fit()
    return out


@pytest.fixture(scope="module")
def stopped_run(tiny_digits, module_tmp):
    """The straight run's settings stopped after 3 of its 4 steps (inside the second epoch)."""
    out = module_tmp("stopped") / "run"
    config, notes = small_config(tiny_digits, out, epochs=2, max_steps=3)
    summary = Trainer(config, notes=notes, show_progress=False).fit()
    assert summary["stopped"] == "max_steps" and summary["steps"] == 3
    return out


@pytest.mark.slow
def test_resume_continues_bit_exactly(straight_run, stopped_run, tmp_path):
    # Resume the run stopped at step 3 and finish: every weight, BatchNorm statistic, optimizer
    # slot and moving average equals the uninterrupted run's.
    out = clone_run(stopped_run, tmp_path / "run")
    resumed = Trainer.resume(out, {"max_steps": 0}, show_progress=False).fit()  # 0: no limit
    assert resumed["steps"] == 4 and resumed["epochs_completed"] == 2
    assert json.loads((out / "train_config.json").read_text())["max_steps"] is None
    assert_bit_identical(trained_arrays(out), trained_arrays(straight_run))
    strip = [{k: v for k, v in r.items() if k not in TIMING} for r in metric_records(out)]
    expected = [{k: v for k, v in r.items() if k not in TIMING}
                for r in metric_records(straight_run)]
    assert strip == expected


@pytest.mark.slow
def test_resume_with_no_steps_left_changes_nothing(stopped_run, tmp_path):
    out = clone_run(stopped_run, tmp_path / "run")
    before, arrays = (out / "last").resolve(), trained_arrays(out)
    messages = []
    summary = Trainer.resume(out, {"max_steps": 3}, show_progress=False,
                             log=messages.append).fit()
    assert (summary["steps"], summary["stopped"]) == (3, "max_steps")
    assert any("nothing to train" in m and "--max-steps 0 for no limit" in m for m in messages)
    assert (out / "last").resolve() == before  # no step taken, no checkpoint written
    assert_bit_identical(trained_arrays(out), arrays)


@pytest.mark.slow
def test_a_run_started_with_relative_paths_resumes_from_another_folder(tiny_digits, tmp_path,
                                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = os.path.relpath(tiny_digits / "train")
    config, notes = resolve(dict(SMALL, data=data, out="run", max_steps=1))
    assert config.data == str(tiny_digits / "train") and config.out == str(tmp_path / "run")
    Trainer(config, notes=notes, show_progress=False).fit()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # Compiling is the same arithmetic: switching it on is allowed (not run here: compiling a
    # full step on the CPU takes minutes).
    assert Trainer.resume("../run", {"compile": True}, show_progress=False).config.compile
    messages = []
    summary = Trainer.resume(tmp_path / "run", {"max_steps": 2,  # the folder named another way
                                                 "data": str(tiny_digits / "train")},
                             show_progress=False, log=messages.append).fit()
    assert summary["steps"] == 2
    assert not any("images changed" in m for m in messages)


@pytest.mark.slow
def test_resume_records_the_changed_settings_in_train_config_json(stopped_run, tmp_path):
    out = clone_run(stopped_run, tmp_path / "run")
    Trainer.resume(out, {"epochs": 5, "max_steps": 3, "workers": 1}, show_progress=False).fit()
    saved = json.loads((out / "train_config.json").read_text())
    assert (saved["epochs"], saved["max_steps"], saved["workers"]) == (5, 3, 1)


def test_a_run_stopped_before_its_first_checkpoint_can_be_started_again(tiny_digits,
                                                                          tmp_path):
    out = tmp_path / "run"
    config, notes = small_config(tiny_digits, out, epochs=1)
    out.mkdir()
    (out / "train_config.json").write_text(json.dumps(config.to_dict()))  # and nothing else
    assert Trainer(config, notes=notes, show_progress=False).config.out == str(out)


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_that_resumes_bit_exactly(straight_run, tiny_digits,
                                                           tmp_path, monkeypatch):
    out = tmp_path / "run"
    config, notes = small_config(tiny_digits, out, epochs=2)
    trainer = Trainer(config, notes=notes, show_progress=False)
    original = trainer.train_loader.epoch

    def interrupt_during_the_second_epoch(epoch, start=0):
        for index, batch in enumerate(original(epoch, start)):
            if epoch == 1 and index == 0:
                signal.raise_signal(signal.SIGINT)  # Ctrl-C while step 3 of 4 is running
            yield batch

    monkeypatch.setattr(trainer.train_loader, "epoch", interrupt_during_the_second_epoch)
    # Python's own Ctrl-C handler, whatever the suite started with (under nohup or in a
    # background job SIGINT is inherited as SIG_IGN, and that is what the trainer would restore).
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    terminate = signal.getsignal(signal.SIGTERM)
    try:
        summary = trainer.fit()
        # The handlers that were there before fit() are back.
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert signal.getsignal(signal.SIGTERM) is terminate
    finally:
        signal.signal(signal.SIGINT, outer)
    assert summary["stopped"] == "interrupted" and summary["steps"] == 3
    state = json.loads((out / "last" / "trainer_state.json").read_text())
    assert (state["epoch"], state["step_in_epoch"], state["step"]) == (1, 1, 3)
    Trainer.resume(out, show_progress=False).fit()
    assert_bit_identical(trained_arrays(out), trained_arrays(straight_run))


@pytest.mark.slow
@pytest.mark.parametrize(
    "damage",
    ["killed before the last line was written", "last line cut off", "last line written twice"],
)
def test_resume_rewrites_metrics_jsonl_from_the_checkpoint(straight_run, tmp_path, damage):
    run = clone_run(straight_run, tmp_path / "run")
    path = run / "metrics.jsonl"
    original = path.read_text()
    lines = original.splitlines(keepends=True)
    assert len(lines) == 2
    if damage == "killed before the last line was written":
        path.write_text(lines[0])
    elif damage == "last line cut off":
        path.write_text(lines[0] + lines[1][: len(lines[1]) // 2])
    else:
        path.write_text(original + lines[1])
    messages = []
    trainer = Trainer.resume(run, show_progress=False, log=messages.append)
    assert path.read_text() == original  # exactly the uninterrupted run's file
    assert [r["epoch"] for r in trainer.metrics] == [1, 2]
    assert [m for m in messages if m.startswith("warning:") and "metrics.jsonl" in m]


def test_metrics_reader_drops_a_last_line_cut_off_mid_write_with_a_warning(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1, "train_loss": 2.5}\n{"epoch": 2, "train_lo')
    warnings = []
    assert read_metrics(path, warnings.append) == [{"epoch": 1, "train_loss": 2.5}]
    assert len(warnings) == 1 and "last line" in warnings[0]


def test_metrics_reader_refuses_a_damaged_line_before_the_last_in_one_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n{"epo\n{"epoch": 2}\n')
    with pytest.raises(CheckpointError, match="line 2") as error:
        read_metrics(path)
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_resume_refuses_to_change_what_is_computed(straight_run):
    with pytest.raises(ConfigError, match="only epochs, max_steps"):
        Trainer.resume(straight_run, {"batch_size": 8})


@pytest.mark.slow
def test_a_new_run_refuses_a_directory_that_holds_one(straight_run, tiny_digits):
    config, _ = small_config(tiny_digits, straight_run, epochs=2)
    with pytest.raises(ConfigError, match="--resume"):
        Trainer(config, show_progress=False)


def test_resume_without_a_checkpoint_says_so(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        Trainer.resume(tmp_path)


@pytest.mark.slow
def test_checkpoints_are_complete_and_linked_as_last_and_best(straight_run):
    last, best = (straight_run / "last").resolve(), (straight_run / "best").resolve()
    assert last.parent.name == "checkpoints" and best.parent == last.parent
    for folder in (last, best):
        names = {p.name for p in folder.iterdir()}
        assert names == {"model.safetensors", "config.json", "training_state.safetensors",
                         "trainer_state.json"}
    # Only what the links point at is kept.
    assert {p.resolve() for p in (straight_run / "checkpoints").iterdir()} == {last, best}
    umask = os.umask(0)
    os.umask(umask)
    for folder in (last, best):  # readable as its neighbours are, not owner-only as mkdtemp's
        assert folder.stat().st_mode & 0o777 == 0o777 & ~umask


@pytest.mark.slow
def test_a_failed_checkpoint_write_leaves_the_last_one_intact(straight_run, tmp_path,
                                                             monkeypatch):
    run = clone_run(straight_run, tmp_path / "copy")
    before = (run / "last").resolve()
    arrays, state = checkpoints.load_checkpoint(run / "last")
    weights, config = load_weights(run / "last")

    full_disk_on_save(monkeypatch, store, tmp_path)
    with pytest.raises(CheckpointError, match=r"cannot write .*training_state.safetensors: "
                                              r".*Unable to write.* MiB free there\)$"):
        checkpoints.save_checkpoint(run, "step-00000099", weights, config, arrays, state)
    assert (run / "last").resolve() == before
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    checkpoints.load_checkpoint(run / "last")  # still complete


@pytest.mark.slow
def test_an_inf_gradient_stops_the_run_before_its_weights_are_saved(straight_run, tmp_path,
                                                                    monkeypatch):
    # The step's loss is computed before its update: only the gradient norm shows that the
    # update just made the weights inf or NaN. Injected here, as no tiny run diverges on cue.
    run = clone_run(straight_run, tmp_path / "copy")
    before = (run / "last").resolve()
    make_train_step = trainer_module.make_train_step

    def diverging(*args):
        step = make_train_step(*args)
        return lambda *batch: (*step(*batch)[:2], mx.array(float("inf")))

    monkeypatch.setattr(trainer_module, "make_train_step", diverging)
    trainer = Trainer.resume(run, {"epochs": 3}, show_progress=False)
    with pytest.raises(ConfigError, match=r"the gradient norm became inf at step 5; lower --lr"):
        trainer.fit()
    assert (run / "last").resolve() == before


@pytest.mark.slow
def test_saving_deletes_only_old_checkpoints_never_other_folders(straight_run, tmp_path):
    run = clone_run(straight_run, tmp_path / "copy")
    mine = run / "checkpoints" / "my_resnet_weights"  # --out pointed at a folder in use
    mine.mkdir()
    (mine / "model.pt").write_bytes(b"keep")
    (run / "checkpoints" / "notes.txt").write_text("keep")
    stale = run / "checkpoints" / "step-00000001"  # a checkpoint no link names any more
    stale.mkdir()
    interrupted = run / "checkpoints" / ".step-00000002-k3x9_a1z"  # a write that was killed
    interrupted.mkdir()
    arrays, state = checkpoints.load_checkpoint(run / "last")
    weights, config = load_weights(run / "last")
    checkpoints.save_checkpoint(run, "step-00000099", weights, config, arrays, state)
    assert (mine / "model.pt").read_bytes() == b"keep"
    assert (run / "checkpoints" / "notes.txt").read_text() == "keep"
    assert not stale.exists() and not interrupted.exists()


class Killed(BaseException):
    """The process dying: raised by every file-system change from the chosen one on."""


def kill_at(patch: pytest.MonkeyPatch, change: int) -> None:
    """Make file-system change number ``change`` (0-based: a rename, a link, a deletion) and
    every later one raise ``Killed``, as if the process died just before it."""
    count = itertools.count()

    def dying(function):
        def wrapper(*args, **kwargs):
            if next(count) >= change:
                raise Killed
            return function(*args, **kwargs)

        return wrapper

    for module, name in ((os, "replace"), (os, "rename"), (os, "symlink"), (os, "unlink"),
                         (os, "rmdir"), (shutil, "rmtree")):
        patch.setattr(module, name, dying(getattr(module, name)))


def save_tiny_checkpoint(run: Path, name: str, value: float) -> None:
    """A checkpoint whose arrays are 2x2 and all ``value`` (the format does not mind)."""
    array = mx.full((2, 2), value)
    state = {"epoch": 1, "step_in_epoch": 0, "step": 4, "best_val_top1": None,
             "best_epoch": None, "totals": {}, "seed": 0, "config": {}, "value": value}
    checkpoints.save_checkpoint(run, name, {"fc.weight": array},
                                InceptionV3Config(num_classes=2, aux_logits=False),
                                {"model/fc.weight": array}, state)


@pytest.mark.parametrize("symbolic_links", [True, False], ids=["symlinks", "pointer-files"])
def test_a_kill_at_any_moment_of_a_save_leaves_last_naming_a_complete_checkpoint(
    tmp_path, monkeypatch, symbolic_links
):
    if not symbolic_links:  # e.g. an exFAT drive: `last` becomes a pointer file

        def unsupported(*args, **kwargs):
            raise OSError(1, "Operation not permitted")

        monkeypatch.setattr(os, "symlink", unsupported)
    previous = tmp_path / "previous"
    save_tiny_checkpoint(previous, "step-00000004", 1.0)
    seen = set()
    for change in itertools.count():
        run = clone_run(previous, tmp_path / f"killed-{change}")
        with pytest.MonkeyPatch.context() as patch:
            kill_at(patch, change)
            try:
                # The same step saved again (a resumed run that stops before its next step):
                # the name is taken by the checkpoint `last` names.
                save_tiny_checkpoint(run, "step-00000004", 2.0)
                finished = True
            except Killed:
                finished = False
        arrays, state = checkpoints.load_checkpoint(run / "last")
        assert np.all(np.array(arrays["model/fc.weight"]) == state["value"]), change
        seen.add(state["value"])
        if finished:
            break
    assert seen == {1.0, 2.0} and change >= 3  # the old one until the link moved, then the new
    assert (run / "last").is_symlink() == symbolic_links
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-00000004.1"]
    assert checkpoints.resolve_link(run, "last") == (run / "checkpoints/step-00000004.1").resolve()


@pytest.mark.slow
def test_evaluated_weights_are_the_moving_average(straight_run):
    # model.safetensors (what mlx_inception.load reads) holds the averaged weights; the raw
    # ones are in training_state.safetensors for resuming.
    arrays = trained_arrays(straight_run)
    evaluated, _ = load_weights(straight_run / "last")
    for key in ("fc.weight", "Conv2d_1a_3x3.conv.weight"):
        assert np.array_equal(np.array(evaluated[key]), arrays[f"ema/{key}"])
        assert not np.array_equal(arrays[f"ema/{key}"], arrays[f"model/{key}"])
    # Their BatchNorm statistics were recomputed for them (precise BN), neither average.
    key = "Mixed_7c.branch1x1.bn.running_var"
    for kind in ("ema", "model"):
        assert not np.allclose(np.array(evaluated[key]), arrays[f"{kind}/{key}"])


# --- fine-tuning set-up, mixed precision ---------------------------------------------------------


def test_init_copies_matching_weights_and_starts_new_heads_at_zero(tmp_path, tiny_digits):
    mx.random.seed(1)
    pretrained = InceptionV3(InceptionV3Config(num_classes=1000, aux_logits=True,
                                               transform_input=True))
    save_model(pretrained, tmp_path / "imagenet")
    config, _ = small_config(tiny_digits, tmp_path / "run", init=str(tmp_path / "imagenet"),
                             image_size=299, batch_size=4)
    model, _, notes = build_network(config, ["a", "b", "c", "d"])
    source, fresh = model_weights(pretrained), model_weights(model)
    for key, value in fresh.items():
        if key.startswith(("fc.", "AuxLogits.fc.")):
            assert value.shape[0] == 4 and not np.any(np.array(value)), key
        else:
            assert np.array_equal(np.array(value), np.array(source[key])), key
    assert model.config.transform_input is True  # the pretrained input convention is kept
    assert any("fc" in note and "1000 classes" in note for note in notes)


def test_init_with_as_many_classes_keeps_the_head_only_when_they_are_the_same_classes(
    tmp_path, tiny_digits
):
    mx.random.seed(3)
    pets = InceptionV3(InceptionV3Config(num_classes=4, aux_logits=False, transform_input=True,
                                         labels=["cat", "dog", "fox", "owl"]))
    save_model(pets, tmp_path / "pets")
    config, _ = small_config(tiny_digits, tmp_path / "run", init=str(tmp_path / "pets"))
    same, _, _ = build_network(config, ["cat", "dog", "fox", "owl"])
    np.testing.assert_array_equal(np.array(same.fc.weight), np.array(pets.fc.weight))
    other, _, notes = build_network(config, ["digit_0", "digit_1", "digit_2", "digit_3"])
    assert not np.any(np.array(other.fc.weight)) and not np.any(np.array(other.fc.bias))
    assert any("new" in note and "fc" in note and "not the ones the weights were trained on"
               in note for note in notes)
    reordered, _, _ = build_network(config, ["dog", "cat", "fox", "owl"])  # outputs mean others
    assert not np.any(np.array(reordered.fc.weight))
    np.testing.assert_array_equal(np.array(other.Mixed_7c.branch1x1.conv.weight),
                                  np.array(pets.Mixed_7c.branch1x1.conv.weight))


def test_a_new_head_below_the_head_only_rate_gets_a_note_with_the_rate_that_trains_it(
    tmp_path, tiny_digits
):
    pets = InceptionV3(InceptionV3Config(num_classes=4, aux_logits=False,
                                         labels=["cat", "dog", "fox", "owl"]))
    save_model(pets, tmp_path / "pets")

    def notes_for(classes: list[str], **settings) -> str:
        config, _ = small_config(tiny_digits, tmp_path / "run", init=str(tmp_path / "pets"),
                                 **settings)
        return "\n".join(build_network(config, classes)[2])

    digits = ["digit_0", "digit_1", "digit_2", "digit_3"]
    slow = notes_for(digits, freeze="none", learning_rate=1e-4)  # the recipe's stage-2 rate
    # batch 4: the head-only rate is 0.01 x 4/32
    assert "new classifier starts at zero and learns slowly at lr 0.0001" in slow
    assert "--lr 0.00125 trains it" in slow and "train it alone first" in slow
    frozen = notes_for(digits, freeze="backbone", learning_rate=1e-4)
    assert "learns slowly" in frozen and "train it alone first" not in frozen
    assert "learns slowly" not in notes_for(digits, learning_rate=0.00125)
    assert "learns slowly" not in notes_for(digits, freeze="none", learning_rate=0.01)
    assert "learns slowly" not in notes_for(["cat", "dog", "fox", "owl"], freeze="none",
                                            learning_rate=1e-4)  # the head is kept


VARIANT = dict(stem="151", bn_aux=True, pool_count_include_pad=False, mixed_7c_pool="max",
               transform_input=True)


@pytest.fixture(scope="module")
def variant_weights(module_tmp) -> Path:
    """A weights directory of the paper's variants: stem 151, BN-auxiliary, SAME pooling, the
    max-pooling Mixed_7c, Google's input convention; 10 classes, with the aux head."""
    mx.random.seed(2)
    network = InceptionV3(InceptionV3Config(num_classes=10, aux_logits=True, **VARIANT))
    return save_model(network, module_tmp("variant") / "weights")


def test_init_weights_give_the_network_their_variant(variant_weights, tiny_digits, tmp_path):
    config, _ = small_config(tiny_digits, tmp_path / "run", init=str(variant_weights),
                             image_size=151)
    assert config.stem is None  # not known until the weights are read
    model, settled, _ = build_network(config, ["a", "b", "c", "d"])
    for name, value in VARIANT.items():
        assert getattr(model.config, name) == value, name
    assert (settled.stem, settled.bn_aux, settled.pool_count_include_pad,
            settled.mixed_7c_pool) == ("151", True, False, "max")
    # 151 px reaches the aux head's 17x17 grid with this stem (299 px with torchvision's).
    assert settled.aux_logits is True and model.config.aux_logits is True
    source, fresh = load_weights(variant_weights)[0], model_weights(model)
    assert np.array_equal(np.array(fresh["Conv2d_1a_3x3.conv.weight"]),
                          np.array(source["Conv2d_1a_3x3.conv.weight"]))
    # The new BN-auxiliary classifier starts with zero output through its BatchNorm's scale.
    assert not np.any(np.array(fresh["AuxLogits.fc_bn.weight"]))
    assert np.any(np.array(fresh["AuxLogits.fc.weight"]))


def test_a_variant_set_explicitly_overrides_the_init_weights_with_a_note(variant_weights,
                                                                         tiny_digits, tmp_path):
    config, _ = small_config(tiny_digits, tmp_path / "run", init=str(variant_weights),
                             stem="79")
    model, settled, notes = build_network(config, ["a", "b", "c", "d"])
    assert settled.stem == "79" and model.config.stem == "79"
    assert model.config.bn_aux is True  # the other fields still come from the weights
    assert any("stem=79" in note and "151" in note for note in notes)


@pytest.mark.slow
def test_a_stem_151_run_trains_a_step_and_loads_back_as_stem_151(tiny_digits, tmp_path):
    out = tmp_path / "run"
    # 45 px is below the 299 stem's 75 px minimum but above the 151 stem's 39.
    assert run_cli("--data", str(tiny_digits / "train"), "--out", str(out), "--stem", "151",
                   "--image-size", "45", "--batch-size", "4", "--max-steps", "1",
                   "--val-split", "0", "--workers", "2") == 0
    assert json.loads((out / "train_config.json").read_text())["stem"] == "151"
    state = json.loads((out / "last" / "trainer_state.json").read_text())
    assert state["step"] == 1
    model = mlx_inception.load(out / "last")
    assert model.config.stem == "151" and model.config.preprocessing.crop_size == 45
    logits = model(mx.array(np.zeros((1, 45, 45, 3), np.float32)))
    assert logits.shape == (1, 4)


def test_freeze_up_to_a_module_names_it_or_fails_clearly(tiny_digits, tmp_path):
    from mlx_inception.training.network import frozen_modules

    assert frozen_modules("Conv2d_2b_3x3") == ["Conv2d_1a_3x3", "Conv2d_2a_3x3",
                                               "Conv2d_2b_3x3"]
    assert frozen_modules("backbone")[-1] == "Mixed_7c" and "fc" not in frozen_modules("backbone")
    with pytest.raises(ConfigError, match="not 'none', 'backbone' or a module name"):
        frozen_modules("Mixed_9z")


def test_bfloat16_step_keeps_float32_master_weights_and_statistics(tiny_digits, tmp_path):
    config, notes = small_config(tiny_digits, tmp_path / "run", dtype="bfloat16",
                                 max_steps=1, val=None, val_split=0.0)
    trainer = Trainer(config, notes=notes, show_progress=False)
    before = model_weights(trainer.model)
    summary = trainer.fit()
    assert summary["steps"] == 1
    after = model_weights(trainer.model)
    assert {v.dtype for v in after.values()} == {mx.float32}
    slots = [v for k, v in tree_flatten(trainer.optimizer.state) if k.endswith(("ms", "mom"))]
    assert slots and {v.dtype for v in slots} == {mx.float32}
    moved = [k for k in after if not np.array_equal(np.array(after[k]), np.array(before[k]))]
    assert "Conv2d_1a_3x3.conv.weight" in moved and "Conv2d_1a_3x3.bn.running_var" in moved


# --- bad data: one-line errors from the command line ------------------------------------------


def run_cli(*args: str) -> int:
    return cli_main(["train", "--quiet", "--no-compile", *args])


def test_an_empty_class_folder_is_refused(tmp_path, tiny_digits, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_digits / "train", data)
    (data / "digit_9").mkdir()
    assert run_cli("--data", str(data), "--out", str(tmp_path / "run")) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "digit_9" in error and "no image files" in error
    assert len(error.splitlines()) == 1


def test_a_folder_with_one_class_is_refused(tmp_path, tiny_digits, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_digits / "train" / "digit_0", data / "digit_0")
    assert run_cli("--data", str(data), "--out", str(tmp_path / "run")) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "at least 2" in error
    assert len(error.splitlines()) == 1


def test_an_unreadable_image_stops_with_one_line_and_a_resumable_checkpoint(tmp_path,
                                                                            tiny_digits,
                                                                            capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_digits / "train", data)
    for path in (data / "digit_0").iterdir():
        path.write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # a PNG header and nothing else
    out = tmp_path / "run"
    assert run_cli("--data", str(data), "--out", str(out), "--image-size", "75",
                   "--batch-size", "4", "--val-split", "0") == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "digit_0" in error and "--resume" in error
    assert len(error.splitlines()) == 1
    checkpoints.load_checkpoint(out / "last")  # nothing is lost: the run can continue


@pytest.mark.slow
def test_a_full_disk_at_the_checkpoint_after_a_bad_image_is_one_line(tmp_path, tiny_digits,
                                                                       capsys, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(tiny_digits / "train", data)
    for path in (data / "digit_0").iterdir():
        path.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "run"
    full_disk_on_save(monkeypatch, store, tmp_path)
    assert run_cli("--data", str(data), "--out", str(out), "--image-size", "75",
                   "--batch-size", "4", "--val-split", "0") == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: cannot write ") and "Unable to write" in error
    assert len(error.splitlines()) == 1
    assert not (out / "last").exists()
    assert not [p for p in (out / "checkpoints").iterdir()]  # no half-written checkpoint


@pytest.mark.slow
def test_an_unreadable_validation_image_keeps_the_epochs_steps(tmp_path, tiny_digits, capsys):
    val = tmp_path / "val"
    shutil.copytree(tiny_digits / "val", val)
    broken = next((val / "digit_1").iterdir())
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "run"
    assert run_cli("--data", str(tiny_digits / "train"), "--val", str(val), "--out", str(out),
                   "--image-size", "75", "--batch-size", "4", "--epochs", "1") == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and broken.name in error and "--resume" in error
    assert len(error.splitlines()) == 1
    # Saved after the epoch's 2 steps, before its evaluation: nothing trained is lost.
    state = json.loads((out / "last" / "trainer_state.json").read_text())
    assert (state["epoch"], state["step_in_epoch"], state["step"]) == (0, 2, 2)
    shutil.copy(next((val / "digit_0").iterdir()), broken)  # the user fixes the file
    summary = Trainer.resume(out, show_progress=False).fit()
    assert (summary["steps"], summary["epochs_completed"]) == (2, 1)
    assert [r["epoch"] for r in metric_records(out)] == [1]


def test_a_damaged_trainer_state_is_refused_in_one_line(tmp_path):
    save_tiny_checkpoint(tmp_path / "run", "step-00000004", 1.0)
    path = tmp_path / "run" / "last" / "trainer_state.json"
    state = json.loads(path.read_text())
    del state["config"]
    path.write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="lacks config") as error:
        checkpoints.load_checkpoint(tmp_path / "run" / "last")
    assert "\n" not in str(error.value) and "start a new run" in str(error.value)


def test_missing_data_folder_is_refused(tmp_path, capsys):
    assert run_cli("--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")) == 1
    assert "no such folder" in capsys.readouterr().err


def test_help_lists_every_recipe_value_with_its_source(capsys):
    with pytest.raises(SystemExit):
        cli_main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for fragment in ("--rmsprop-epsilon", "[paper] 8", "--aux-weight", "--freeze",
                     "--resume", "--dtype", "fine-tuning changes these defaults"):
        assert fragment in text


def test_config_file_settings_are_used_and_flags_override_them(tmp_path):
    from mlx_inception.training.recipe import load_config_file

    path = tmp_path / "recipe.json"
    path.write_text(json.dumps({"label_smoothing": 0.2, "epochs": 7}))
    settings = load_config_file(path)
    settings.update({"data": "d", "out": "o", "epochs": 3})
    config, _ = resolve(settings)
    assert (config.label_smoothing, config.epochs) == (0.2, 3)
    path.write_text(json.dumps({"label_smothing": 0.2}))
    with pytest.raises(ConfigError, match="label_smothing"):
        load_config_file(path)


def test_data_error_is_raised_for_fewer_images_than_one_batch(tiny_digits, tmp_path):
    config, _ = small_config(tiny_digits, tmp_path / "run", batch_size=16)
    with pytest.raises(DataError, match="fewer than one batch"):
        Trainer(config, show_progress=False)
