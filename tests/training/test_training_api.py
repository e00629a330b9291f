"""``mlx_inception.train``: the command's training run from Python, the same configuration;
``--init`` of a trained run starts from its weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_training import SMALL
from test_training_data import make_digits_folder

import mlx_inception
from mlx_inception.checkpoints.store import model_weights
from mlx_inception.cli import main as cli_main
from mlx_inception.commands.train import FLAGS
from mlx_inception.training.recipe import ConfigError, resolve
from mlx_inception.training.trainer import Trainer

QUIET = dict(progress=False, log=lambda message: None)


def test_unknown_settings_and_a_config_file_for_a_resumed_run_are_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"^unknown training setting\(s\): epoch; see"):
        mlx_inception.train(tmp_path, tmp_path / "run", epoch=3, **QUIET)
    with pytest.raises(ConfigError, match=r"^--config cannot change a resumed run"):
        mlx_inception.train(resume=tmp_path, config_file=tmp_path / "c.json", **QUIET)


@pytest.mark.slow
def test_train_runs_what_the_command_runs_and_resumes(tmp_path, capsys):
    digits = make_digits_folder(tmp_path / "digits", 4, 2, 1)
    settings = dict(SMALL, val=digits / "val", epochs=2, max_steps=1, workers=1)
    summary = mlx_inception.train(digits / "train", tmp_path / "api", **settings, **QUIET)
    assert (summary["steps"], summary["stopped"]) == (1, "max_steps")
    assert summary["run_dir"] == str(tmp_path / "api")

    flag = {name: flag for flag, (name, _, _) in FLAGS.items()}
    flags = [f"{flag[name]}={value}" for name, value in settings.items()
             if not isinstance(value, bool)]  # compile=False: --no-compile
    assert cli_main(["train", f"--data={digits / 'train'}", f"--out={tmp_path / 'cli'}",
                     "--no-compile", "--quiet", *flags]) == 0
    capsys.readouterr()
    api, cli = (json.loads((tmp_path / run / "train_config.json").read_text())
                for run in ("api", "cli"))
    assert api.pop("out") != cli.pop("out") and api == cli  # the same resolved configuration

    summary = mlx_inception.train(resume=tmp_path / "api", max_steps=0, **QUIET)
    assert (summary["steps"], summary["epochs_completed"], summary["stopped"]) == (4, 2, None)
    model = mlx_inception.load(tmp_path / "api")
    assert model.config.labels == [f"digit_{k}" for k in range(4)]

    # --init of the trained run starts from its weights (its best checkpoint, the evaluated
    # ones), the head included: the classes are the same.
    config, notes = resolve(dict(SMALL, data=str(digits / "train"), out=str(tmp_path / "next"),
                                 init=str(tmp_path / "api")))
    start = model_weights(Trainer(config, notes=notes, show_progress=False).model)
    trained = model_weights(model)
    assert start.keys() == trained.keys()
    assert all(np.array_equal(np.array(start[k]), np.array(trained[k])) for k in trained)
