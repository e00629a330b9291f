"""When a run has diverged: a loss or gradient that is not finite, or a loss grown by orders of
magnitude, stops the run with one line saying what to try.

The trainer checks every step before counting it, so the weights the step just made are never
saved. The loss is the one all processes share (all-reduced), so every process stops at the
same step without asking the others.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .history import EpochTotals
from .recipe import ConfigError, TrainConfig

# A loss this many times the first epoch's running loss has diverged, not fluctuated.
GROWTH = 1000.0


def loss_limit(num_classes: int, first_epoch_loss: float | None) -> float:
    """Return the largest training loss of a run that has not diverged: 1000 x the first epoch's
    running loss, at most 1000 x ln(num_classes) and at least 10 x ln(num_classes).

    ln(K) is the loss of a uniform guess: a loss 1000 times that has diverged whatever the first
    epoch showed (a first epoch that was itself diverging), and one under 10 times that has not
    (a first epoch near 0 makes any later noise look like growth).
    """
    chance = math.log(max(num_classes, 2))
    if first_epoch_loss is None:  # the run's first step
        return GROWTH * chance
    return GROWTH * min(chance, max(first_epoch_loss, chance / 100))


def first_epoch_loss(records: Sequence[dict[str, Any]], totals: EpochTotals) -> float | None:
    """Return the first epoch's mean training loss (its record, else its steps so far), or None
    before the first step."""
    if records:
        return records[0]["train_loss"]
    if totals.steps:
        return totals.loss / totals.steps
    return None


def check_step(loss: float, norm: float, progress: Any, records: Sequence[dict[str, Any]],
               num_classes: int, config: TrainConfig) -> None:
    """Raise ``ConfigError`` with what to try when the loss or gradient norm of the step after
    ``progress`` (not yet counted in it) is not finite, or the loss is above ``loss_limit``."""
    step = progress.step + 1
    limit = loss_limit(num_classes, first_epoch_loss(records, progress.totals))
    problem = None
    for name, value in (("loss", loss), ("gradient norm", norm)):
        if not math.isfinite(value):
            problem = f"the {name} became {value} at step {step}"
            break
    if problem is None and loss > limit:
        problem = (f"the loss grew to {loss:.3g} at step {step}, over {limit:.3g} (1000 x the "
                   f"first epoch's mean, at most 1000 x ln({num_classes}), a uniform guess's)")
    if problem is None:
        return
    hints = [f"lower --lr (now {config.learning_rate:g}) or --base-lr"]
    if config.recipe == "scratch":
        hints.append("try --recipe paper (it clips the gradients)")
    elif config.clip_norm <= 0:  # fine-tuning, where --recipe paper does not apply
        hints.append("try --clip-norm 2 (the paper's clipping)")
    if config.init:
        hints.append(f"check the --init weights ({config.init})")
    raise ConfigError(f"{problem}; {', '.join(hints)}, and start again (the run diverged; "
                      "this step's weights were not saved)")
