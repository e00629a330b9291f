"""A run that diverges stops before saving, with what to try; the per-step log steps.jsonl."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from test_training import clone_run, small_config
from test_training_data import make_digits_folder

from mlx_inception.training.checkpoint import Progress
from mlx_inception.training.divergence import check_step, loss_limit
from mlx_inception.training.history import EpochTotals
from mlx_inception.training.recipe import ConfigError, resolve
from mlx_inception.training.steplog import STEPS_FILE, StepLog, step_line
from mlx_inception.training.trainer import Trainer


@pytest.fixture(scope="module")
def tiny_digits(module_tmp) -> Path:
    """4 digits x 2 training images (2 steps of 4 per epoch) and 1 validation image each."""
    return make_digits_folder(module_tmp("tiny_digits"), 4, 2, 1)


# --- divergence -------------------------------------------------------------------------------


def test_the_loss_limit_is_1000_times_the_first_epochs_within_10_to_1000_times_chance():
    chance = math.log(10)
    assert loss_limit(10, None) == pytest.approx(1000 * chance)  # the first step
    assert loss_limit(10, 1.5) == pytest.approx(1500)
    assert loss_limit(10, 5.9) == pytest.approx(1000 * chance)  # a first epoch at 5.9: capped
    assert loss_limit(10, 1e-6) == pytest.approx(10 * chance)  # a first epoch near 0
    assert loss_limit(1, None) == pytest.approx(1000 * math.log(2))


def progress_at(step: int, losses: list[float]) -> Progress:
    totals = EpochTotals(loss=sum(losses), steps=len(losses))
    return Progress(step=step, step_in_epoch=step, totals=totals)


@pytest.mark.parametrize("loss, norm, expected", [
    (float("nan"), 1.0, "the loss became nan at step 4"),
    (2.0, float("inf"), "the gradient norm became inf at step 4"),
    (2001.0, 1.0, r"the loss grew to 2e\+03 at step 4, over 2e\+03 \(1000 x the first epoch's"),
])
def test_a_diverging_step_stops_the_run_with_what_to_try(loss, norm, expected):
    config, _ = resolve({"data": "d", "out": "o"})
    progress = progress_at(3, [2.0, 2.0, 2.0])
    with pytest.raises(ConfigError, match=expected + r".*; lower --lr \(now 0.01\) or --base-lr, "
                       r"try --recipe paper \(it clips the gradients\), and start again"):
        check_step(loss, norm, progress, [], 10, config)
    check_step(1999.0, 1e6, progress, [], 10, config)  # large, not diverged: no error
    # After the first epoch its record is the reference, not the current epoch's steps.
    check_step(1999.0, 1.0, progress_at(3, [1e-3]), [{"epoch": 1, "train_loss": 2.0}], 10, config)


@pytest.mark.parametrize("settings, hint", [
    ({"init": "runs/old/best"}, "try --clip-norm 2 (the paper's clipping), check the --init "
                                "weights (runs/old/best), and start again"),
    ({"recipe": "paper"}, "lower --lr (now 0.0009) or --base-lr, and start again"),
])
def test_the_hints_follow_the_recipe_and_name_the_init_weights(settings, hint):
    config, _ = resolve({"data": "d", "out": "o", **settings})
    with pytest.raises(ConfigError) as raised:
        check_step(float("inf"), 1.0, Progress(), [], 3, config)
    message = str(raised.value)
    assert hint in message and "--recipe paper" not in message and "\n" not in message


@pytest.mark.slow
def test_an_absurd_learning_rate_stops_the_run_before_anything_is_saved(tiny_digits, tmp_path):
    out = tmp_path / "run"
    config, notes = small_config(tiny_digits, out, epochs=3, learning_rate=1e4)
    trainer = Trainer(config, notes=notes, show_progress=False)
    with pytest.raises(ConfigError, match=r"^the loss (grew to|became) .* at step 2\b.*lower "
                                          r"--lr \(now 10000\) or --base-lr, try --recipe paper"):
        trainer.fit()
    assert not (out / "last").exists() and not (out / "checkpoints").exists()
    assert [line["step"] for line in step_lines(out)] == [1]  # the step before it diverged


# --- steps.jsonl ------------------------------------------------------------------------------


def step_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / STEPS_FILE).read_text().splitlines()]


def test_long_epochs_log_the_mean_of_every_few_steps_and_the_epochs_last():
    totals, lines = EpochTotals(), []
    for step in range(1, 206):  # 205 steps an epoch: a line every 2 steps, and at step 205
        totals.loss += step
        totals.steps += 1
        totals.seconds += 0.5
        totals.timed_images += 4
        line = step_line(0, step, step, 205, totals, lambda n: 0.01 * (n + 1))
        if line is not None:
            lines.append(line)
    assert [line["step"] for line in lines] == [*range(2, 205, 2), 205]
    assert lines[0] == {"step": 2, "epoch": 1, "loss": 1.5, "learning_rate": 0.02,
                        "images_per_second": 8.0}
    assert lines[-1]["loss"] == 205 and lines[-1]["learning_rate"] == pytest.approx(2.05)


def test_restoring_cuts_the_log_back_to_the_checkpoints_step(tmp_path):
    path = tmp_path / STEPS_FILE
    whole = "".join(json.dumps({"step": n, "loss": 1.0}) + "\n" for n in range(1, 6))
    path.write_text(whole + '{"step": 6, "lo')  # killed while the disk was full
    warnings = []
    log = StepLog(tmp_path, warnings.append)
    log.restore(3)
    assert [line["step"] for line in step_lines(tmp_path)] == [1, 2, 3] and not warnings
    path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    log.restore(3)
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n'
    assert warnings == [f"{path}: dropped 1 damaged line(s)"]
    log.restore(0)  # a new run in a folder whose earlier run never saved a checkpoint
    assert not path.exists()


def test_a_failed_append_is_reported_once_and_training_goes_on(tmp_path):
    warnings = []
    log = StepLog(tmp_path / "gone", warnings.append)  # its folder does not exist
    log.append({"step": 1})
    log.append({"step": 2})
    assert len(warnings) == 1 and "cannot append" in warnings[0] and log.failed


@pytest.mark.slow
def test_every_step_is_logged_and_a_resumed_run_repeats_none(tiny_digits, tmp_path):
    straight = tmp_path / "straight"
    config, notes = small_config(tiny_digits, straight, epochs=2)
    Trainer(config, notes=notes, show_progress=False).fit()
    lines = step_lines(straight)
    assert [(line["step"], line["epoch"]) for line in lines] == [(1, 1), (2, 1), (3, 2), (4, 2)]
    metrics = [json.loads(r) for r in (straight / "metrics.jsonl").read_text().splitlines()]
    # metrics.jsonl gives the rate of each epoch's last step; it decays after every epoch here.
    assert [lines[1]["learning_rate"], lines[3]["learning_rate"]] == [
        m["learning_rate"] for m in metrics]
    assert lines[0]["learning_rate"] == pytest.approx(config.learning_rate)
    assert lines[2]["learning_rate"] == pytest.approx(0.94 * config.learning_rate)
    assert [lines[0]["loss"] + lines[1]["loss"], lines[2]["loss"] + lines[3]["loss"]] == (
        pytest.approx([2 * m["train_loss"] for m in metrics]))
    assert lines[0]["images_per_second"] is None and lines[1]["images_per_second"] > 0

    # Stopped at step 3; then a kill after step 4 was logged but before it was saved.
    stopped = tmp_path / "stopped"
    config, notes = small_config(tiny_digits, stopped, epochs=2, max_steps=3)
    Trainer(config, notes=notes, show_progress=False).fit()
    resumed = clone_run(stopped, tmp_path / "resumed")
    with open(resumed / STEPS_FILE, "a") as log:
        log.write(json.dumps({**lines[3], "loss": 99.0}) + '\n{"step": 5, "lo')
    Trainer.resume(resumed, {"max_steps": 0}, show_progress=False).fit()

    def untimed(run_dir):
        return [{k: v for k, v in line.items() if k != "images_per_second"}
                for line in step_lines(run_dir)]

    assert untimed(resumed) == untimed(straight)  # bit-identical losses, no line twice
