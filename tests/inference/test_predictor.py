"""The Predictor: top-k names and probabilities per image, batched, with taps and bad files.

A small-input network (crop 107, resize 122) keeps every forward pass fast; what is tested is
that the predictor feeds the network exactly the preprocessed photo and reports the network's
own softmax, whatever the batch size, input kind or bad neighbours in the batch.
"""

from __future__ import annotations

import os

import mlx.core as mx
import numpy as np
import pytest
from PIL import Image

from mlx_inception.checkpoints.store import save_model
from mlx_inception.data.images import load_image
from mlx_inception.data.labels import imagenet_classes, load_labels
from mlx_inception.data.transforms import preprocess
from mlx_inception.errors import InceptionError
from mlx_inception.fast import fast_model
from mlx_inception.inference.predictor import Prediction, Predictor, TopK
from mlx_inception.model import BatchNorm, InceptionV3, InceptionV3Config, Preprocessing

skimage_data = pytest.importorskip("skimage.data")
SKIMAGE = os.path.dirname(skimage_data.__file__)
PHOTOS = [os.path.join(SKIMAGE, name) for name in ("chelsea.png", "coffee.png", "rocket.jpg")]
SMALL = Preprocessing(resize_size=122, crop_size=107)
# Two runs of the same float32 network on the same input agree to rounding; batching changes
# the order of nothing per image in MLX's convolutions, but allow for it: 1e-5 on probabilities.
PROBABILITY_TOLERANCE = 1e-5


def small_model(
    num_classes: int = 1000,
    labels: str | list[str] | None = "imagenet-1k",
    preprocessing: Preprocessing = SMALL,
    seed: int = 0,
) -> InceptionV3:
    """A seeded Inception-v3 for 107-pixel input with activations of a trained network's size.

    torchvision's initialisation with unit BatchNorm statistics lets activations grow layer
    after layer (logits in the hundreds, float16 overflows). Every BatchNorm's statistics are
    set from one training-mode pass over real photos (momentum 1), as training would settle
    them, and the classifier is redrawn so logits have a standard deviation of about 2: the
    softmax is spread out, so top-k order and probabilities mean something.
    """
    mx.random.seed(seed)
    config = InceptionV3Config(
        num_classes=num_classes, aux_logits=False, labels=labels, preprocessing=preprocessing
    )
    model = InceptionV3(config)
    photos = mx.array(np.stack([preprocess(load_image(p), preprocessing) for p in PHOTOS]))
    batchnorms = [m for _, m in model.named_modules() if isinstance(m, BatchNorm)]
    for bn in batchnorms:
        bn.momentum = 1.0
    model.train()
    mx.eval(model(photos))
    for bn in batchnorms:
        bn.momentum = 0.1
    model.eval()
    _, taps = model.forward_with_taps(photos)
    scale = float(mx.sqrt(mx.mean(taps["avgpool"] ** 2)))
    model.fc.weight = mx.random.normal(model.fc.weight.shape) * (2.0 / (scale * 2048**0.5))
    model.fc.bias = mx.zeros_like(model.fc.bias)
    mx.eval(model.parameters())
    return model


@pytest.fixture(scope="module")
def model() -> InceptionV3:
    return small_model()


def direct_probabilities(model: InceptionV3, path) -> np.ndarray:
    """The softmax of the network the Predictor runs by default (the fast inference path: a
    rewritten copy of ``model``) on the preprocessed photo, without the Predictor.

    This seeded network's BatchNorm statistics come from three small images, and its logits
    change by up to 1.5e-4 of their scale when BatchNorm is folded (float32 rounding, amplified
    layer after layer); comparing the Predictor with the plain ``model`` would test that, which
    tests/fast/test_fast_inference.py does on a better-conditioned network.
    """
    x = mx.array(preprocess(load_image(path), model.config.preprocessing)[None])
    return np.array(mx.softmax(fast_model(model)(x), axis=-1))[0]


def test_prediction_is_the_networks_softmax_on_the_preprocessed_photo(model):
    [prediction] = Predictor(model, top_k=5).predict(PHOTOS[0])
    expected = direct_probabilities(model, PHOTOS[0])
    assert prediction.error is None and prediction.source == PHOTOS[0]
    np.testing.assert_allclose(prediction.probabilities, expected, atol=PROBABILITY_TOLERANCE)
    assert [entry.index for entry in prediction.top_k] == list(np.argsort(-expected)[:5])


def test_top_k_is_sorted_and_named_with_imagenet_classes(model):
    [prediction] = Predictor(model, top_k=3).predict(PHOTOS[1])
    assert len(prediction.top_k) == 3
    probabilities = [entry.probability for entry in prediction.top_k]
    assert probabilities == sorted(probabilities, reverse=True)
    assert 0 < probabilities[0] < 1  # a spread-out softmax, not a one-hot
    names = imagenet_classes()
    assert all(entry.label == names[entry.index] for entry in prediction.top_k)
    assert prediction.top_k[0].probability == pytest.approx(
        float(prediction.probabilities[prediction.top_k[0].index])
    )


def test_batch_size_does_not_change_predictions(model):
    one = Predictor(model, batch_size=1).predict(PHOTOS)
    three = Predictor(model, batch_size=3).predict(PHOTOS)
    for a, b in zip(one, three, strict=True):
        assert a.source == b.source
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=PROBABILITY_TOLERANCE)


def test_paths_arrays_pil_images_and_bytes_predict_the_same(model):
    path = PHOTOS[0]
    with open(path, "rb") as file:
        data = file.read()
    sources = [path, np.asarray(load_image(path)), load_image(path), data]
    predictions = Predictor(model, batch_size=2).predict(sources)
    for prediction in predictions[1:]:
        np.testing.assert_allclose(
            prediction.probabilities, predictions[0].probabilities, atol=PROBABILITY_TOLERANCE
        )
    assert predictions[1].source == "<array 300x451x3 uint8>"


def test_a_bad_file_in_a_batch_gets_its_error_and_the_rest_are_predicted(model, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 definitely not a whole JPEG")
    sources = [PHOTOS[0], broken, tmp_path / "missing.png", PHOTOS[1]]
    predictions = Predictor(model, batch_size=2).predict(sources)
    assert [p.source for p in predictions] == [str(s) for s in sources]
    assert predictions[1].error.startswith(f"{broken}: ") and predictions[1].top_k == []
    assert predictions[2].error == f"{tmp_path / 'missing.png'}: no such file"
    for index in (0, 3):
        np.testing.assert_allclose(
            predictions[index].probabilities,
            direct_probabilities(model, sources[index]),
            atol=PROBABILITY_TOLERANCE,
        )


def test_a_batch_of_only_bad_files_gives_only_errors(model, tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    predictions = Predictor(model).predict([tmp_path / "empty.png"])
    assert predictions[0].error and predictions[0].probabilities is None


def test_taps_are_the_activations_of_the_same_forward_pass(model):
    predictions = Predictor(model, batch_size=2).predict(PHOTOS[:2], taps=True)
    x = mx.array(np.stack([preprocess(load_image(p), SMALL) for p in PHOTOS[:2]]))
    logits, taps = fast_model(model).forward_with_taps(x)  # the network the Predictor runs
    for i, prediction in enumerate(predictions):
        assert set(prediction.taps) == set(taps)
        assert prediction.taps["Mixed_6e.branch7x7dbl"].shape == (5, 5, 192)
        np.testing.assert_allclose(
            prediction.taps["Mixed_7c"], np.array(taps["Mixed_7c"][i]), rtol=1e-5, atol=1e-5
        )
        np.testing.assert_allclose(
            prediction.probabilities,
            np.array(mx.softmax(logits[i])),
            atol=PROBABILITY_TOLERANCE,
        )


def test_taps_can_be_limited_to_named_activations(model):
    [prediction] = Predictor(model).predict(PHOTOS[0], taps=["avgpool", "Mixed_5b.branch_pool"])
    assert set(prediction.taps) == {"avgpool", "Mixed_5b.branch_pool"}
    assert prediction.taps["avgpool"].shape == (2048,)


def test_json_form_is_path_and_top_k_or_path_and_error():
    good = Prediction("a.jpg", [TopK(3, "tiger shark", 0.5)], np.zeros(4, np.float32))
    assert good.to_dict() == {
        "path": "a.jpg",
        "top_k": [{"index": 3, "label": "tiger shark", "probability": 0.5}],
    }
    assert Prediction("b.jpg", error="b.jpg: no such file").to_dict() == {
        "path": "b.jpg",
        "error": "b.jpg: no such file",
    }


def test_models_without_label_names_give_indices_only():
    model = small_model(num_classes=4, labels=None)
    [prediction] = Predictor(model, top_k=10).predict(PHOTOS[0])
    assert len(prediction.top_k) == 4  # top_k larger than the number of classes
    assert all(entry.label is None for entry in prediction.top_k)


def test_labels_are_only_used_when_they_fit_the_head():
    assert load_labels(InceptionV3Config(num_classes=1000))[:2] == ["tench", "goldfish"]
    assert load_labels(InceptionV3Config(num_classes=10, labels="imagenet-1k")) is None
    assert load_labels(["cat", "dog"]) == ["cat", "dog"]
    assert len(load_labels("imagenet-1k")) == 1000


def test_from_source_loads_a_weights_directory(model, tmp_path):
    save_model(model, tmp_path / "weights")
    predictor = Predictor.from_source(tmp_path / "weights", top_k=2, batch_size=1)
    [prediction] = predictor.predict(PHOTOS[0])
    assert len(prediction.top_k) == 2
    np.testing.assert_allclose(
        prediction.probabilities, direct_probabilities(model, PHOTOS[0]), atol=1e-5
    )


def test_half_precision_network_gets_half_precision_input(model, tmp_path):
    save_model(model, tmp_path / "weights")
    predictor = Predictor.from_source(tmp_path / "weights", dtype="float16")
    assert predictor.input_dtype == mx.float16
    [prediction] = predictor.predict(PHOTOS[0])
    assert prediction.probabilities.dtype == np.float32
    assert prediction.probabilities.sum() == pytest.approx(1.0, abs=1e-4)


def test_bad_arguments_are_refused_in_one_line(model):
    with pytest.raises(InceptionError, match="crops 7"):
        Predictor(model, crops=7)
    with pytest.raises(InceptionError, match="batch size"):
        Predictor(model, batch_size=0)
    with pytest.raises(InceptionError, match="taps"):
        Predictor(model, crops=10).predict(PHOTOS[0], taps=True)


def test_rgba_and_grayscale_photos_predict(model):
    predictions = Predictor(model).predict(
        [os.path.join(SKIMAGE, "horse.png"), os.path.join(SKIMAGE, "coins.png")]
    )
    assert all(p.error is None and len(p.top_k) == 5 for p in predictions)
    assert Image.open(os.path.join(SKIMAGE, "horse.png")).mode == "RGBA"
