"""The registry of known weights: each entry's repo, preprocessing, licence and accuracy.

Reference: ../shared/reference/inception-v3.md (the pretrained-weights table) and timm's
``inception_v3`` pretrained configs (crop_pct 0.875, bicubic; mean = std = 0.5 except gluon).
"""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest
from conftest import real_photos

import mlx_inception
from mlx_inception.checkpoints import registry
from mlx_inception.data.transforms import timm_preprocessing
from mlx_inception.model import IMAGENET_MEAN, IMAGENET_STD

NAMES = ["inception_v3.tv_in1k", "inception_v3.tf_in1k", "inception_v3.tf_adv_in1k",
         "inception_v3.gluon_in1k"]
# Top-1 / top-5 on ImageNet-1k validation as timm reports them (the reference table).
REPORTED = {
    "inception_v3.tv_in1k": (77.472, 93.468),
    "inception_v3.tf_in1k": (77.866, 93.644),
    "inception_v3.tf_adv_in1k": (77.598, 93.726),
    "inception_v3.gluon_in1k": (78.806, 94.372),
}
HALF = (0.5, 0.5, 0.5)


@pytest.fixture(scope="module")
def table() -> registry.Registry:
    return registry.load_registry()


def test_registry_holds_the_four_timm_weight_sets(table):
    assert sorted(table.entries) == sorted(NAMES)


def test_default_is_torchvisions_weights_and_is_listed_first(table):
    assert table.default == "inception_v3.tv_in1k"
    assert table.names()[0] == table.default
    assert registry.default_name() == table.default


@pytest.mark.parametrize("name", NAMES)
def test_entry_points_at_timms_safetensors_on_main(table, name):
    entry = table.entries[name]
    assert entry.repo_id == f"timm/{name}"
    assert (entry.filename, entry.revision) == ("model.safetensors", "main")
    assert entry.sha256 is None or registry.SHA256_PATTERN.fullmatch(entry.sha256)


@pytest.mark.parametrize("name", ["inception_v3.tv_in1k", "inception_v3.tf_in1k",
                                  "inception_v3.tf_adv_in1k"])
def test_tf_and_tv_weights_take_inputs_scaled_to_minus_one_one(table, name):
    config = table.entries[name].base_config()
    assert (config.preprocessing.mean, config.preprocessing.std) == (HALF, HALF)
    assert config.transform_input is False


def test_gluon_weights_take_imagenet_mean_and_std(table):
    config = table.entries["inception_v3.gluon_in1k"].base_config()
    assert config.preprocessing.mean == IMAGENET_MEAN
    assert config.preprocessing.std == IMAGENET_STD
    assert config.transform_input is False


@pytest.mark.parametrize("name", NAMES)
def test_preprocessing_is_timms_eval_transform(table, name):
    config = table.entries[name].base_config()
    expected = timm_preprocessing(mean=config.preprocessing.mean, std=config.preprocessing.std)
    assert config.preprocessing == expected  # resize floor(299 / 0.875) = 341, bicubic, crop 299
    assert config.labels == "imagenet-1k"


@pytest.mark.parametrize("name", NAMES)
def test_reported_accuracy_and_licence_are_recorded(table, name):
    entry = table.entries[name]
    assert (entry.accuracy["top1"], entry.accuracy["top5"]) == REPORTED[name]
    assert entry.accuracy["dataset"] == "ImageNet-1k validation"
    assert entry.license == "apache-2.0"  # what each timm repo on the Hub declares
    assert entry.source_info()["reported_accuracy"]["top1"] == REPORTED[name][0]


def test_tv_config_feeds_torchvision_weights_as_torchvisions_pretrained_pipeline(
    table, calibrated_model, calibrated_weights_dir
):
    """torchvision runs its pretrained weights on ImageNet-normalised input with
    transform_input=True; the registry runs the same weights on (x - 0.5) / 0.5 without it.
    Both must give the same logits (float32, relative 1e-4)."""
    torch = pytest.importorskip("torch")
    from torchvision.models import inception_v3

    pretrained_style = inception_v3(weights=None, aux_logits=True, init_weights=False,
                                    transform_input=True)
    pretrained_style.load_state_dict(calibrated_model.state_dict())
    pretrained_style.eval()
    imagenet_normalised = real_photos(107, 2)
    pixels = imagenet_normalised * np.array(IMAGENET_STD, np.float32) + np.array(
        IMAGENET_MEAN, np.float32
    )
    config = table.entries["inception_v3.tv_in1k"].base_config()
    mean = np.array(config.preprocessing.mean, np.float32)
    std = np.array(config.preprocessing.std, np.float32)
    model = mlx_inception.load(calibrated_weights_dir, config=config)
    ours = np.array(model(mx.array((pixels - mean) / std)))
    with torch.no_grad():
        theirs = pretrained_style(
            torch.from_numpy(imagenet_normalised.transpose(0, 3, 1, 2).copy())
        ).numpy()
    assert np.max(np.abs(ours - theirs)) <= 1e-4 * np.max(np.abs(theirs))


def test_lookup_by_name_is_case_insensitive_and_by_repo(table):
    assert table.find("Inception_V3.TF_IN1K").name == "inception_v3.tf_in1k"
    assert table.find("inception_v3.unknown") is None
    assert table.for_repo("timm/inception_v3.gluon_in1k").name == "inception_v3.gluon_in1k"
    assert table.for_repo("someone/else") is None


def registry_data(**changes) -> dict:
    data = json.loads(registry.REGISTRY_FILE.read_text())
    data["weights"]["inception_v3.tv_in1k"].update(changes)
    return data


@pytest.mark.parametrize(
    "changes, complaint",
    [
        ({"sha256": "not-a-hash"}, "sha256"),
        ({"repo_id": "no-owner"}, "owner/name"),
        ({"config": {"num_clases": 10}}, "num_clases"),
    ],
)
def test_malformed_entries_are_refused(changes, complaint):
    with pytest.raises(ValueError, match=complaint):
        registry.parse_registry(registry_data(**changes))


def test_default_must_be_an_entry():
    data = registry_data()
    data["default"] = "inception_v3.nonexistent"
    with pytest.raises(ValueError, match="default"):
        registry.parse_registry(data)
