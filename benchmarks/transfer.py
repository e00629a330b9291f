"""Does a backbone trained here transfer? Fashion-MNIST pretraining, then the digits.

Run by hand (not in CI; about half an hour on 2 cores at the defaults):

    python benchmarks/transfer.py --work /tmp/transfer

1. Writes Fashion-MNIST (Debian's ``dataset-fashion-mnist``: /usr/share/datasets/fashion-mnist/)
   and scikit-learn's digits as image folders, both upscaled to 80 px: ``--fashion-images``
   training images of Fashion-MNIST's training set, 300 of its test set for validation; all
   1,797 digits with every fifth held out (1,437 / 360).
2. Trains from scratch on Fashion-MNIST (the default recipe) for ``--pretrain-epochs``.
3. For each of ``--seeds``, trains on the digits for ``--epochs`` twice with the same recipe,
   rate, crops, seed and number of epochs: from scratch (the default recipe), and from the
   Fashion-MNIST run's weights (``init``, every layer trained, a new head). Every run crops with
   ``--crop-scale``; the digit runs do not flip (digits are not mirror-symmetric). Prints each
   run's validation top-1 per epoch and the means of the last epoch as JSON.

Everything goes through ``mlx_inception.train``, the run ``mlx-inception train`` makes.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image

import mlx_inception
from mlx_inception.training.recipe import ARCHITECTURE, resolve

FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "ankle-boot"]
SIZE = 80


def read_idx(path: Path) -> np.ndarray:
    """Return the array in an IDX file (gzip), as the MNIST family ships them."""
    data = gzip.decompress(path.read_bytes())
    if data[:2] != b"\0\0" or data[2] != 8:
        raise SystemExit(f"{path}: not an IDX file of unsigned bytes")
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def write_image(pixels: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).resize((SIZE, SIZE), Image.Resampling.BILINEAR).save(path)


def write_fashion(root: Path, train_images: int, val_images: int) -> Path:
    for split, count, prefix in (("train", train_images, "train"), ("val", val_images, "t10k")):
        images = read_idx(FASHION / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(FASHION / f"{prefix}-labels-idx1-ubyte.gz")
        for i in range(count):
            write_image(images[i], root / split / FASHION_CLASSES[labels[i]] / f"{i:05d}.png")
    return root


def write_digits(root: Path) -> Path:
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (pixels, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        split = "val" if i % 5 == 0 else "train"
        write_image(np.round(pixels * (255 / 16)).astype(np.uint8),
                    root / split / f"digit_{label}" / f"{i:04d}.png")
    return root


def curve(run: Path) -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [round(json.loads(line)["val_top1"], 4) for line in lines]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for data and runs")
    parser.add_argument("--fashion-images", type=int, default=8000)
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5, help="digits epochs, both runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=75)
    parser.add_argument("--crop-scale", type=float, nargs=2, default=[0.35, 1.0],
                        help="random-resized-crop area range, every run")
    args = parser.parse_args()
    if not FASHION.is_dir():
        raise SystemExit(f"no {FASHION}: apt-get install dataset-fashion-mnist")
    work = args.work
    if work.exists() and any(work.iterdir()):
        raise SystemExit(f"{work} is not empty: choose another --work")
    fashion = write_fashion(work / "fashion", args.fashion_images, 300)
    digits = write_digits(work / "digits")
    common = dict(image_size=args.image_size, batch_size=args.batch_size,
                  crop_scale=list(args.crop_scale))
    times: dict[str, int] = {}

    def run(name: str, data: Path, **settings) -> list[float]:
        began = time.perf_counter()
        mlx_inception.train(data / "train", work / name, val=data / "val", progress=False,
                            **common, **settings)
        times[name] = round(time.perf_counter() - began)
        print(f"{name}: val top-1 per epoch {curve(work / name)} ({times[name]} s)", flush=True)
        return curve(work / name)

    pretrained = run("fashion-run", fashion, epochs=args.pretrain_epochs)
    scratch, _ = resolve({"data": "d", "out": "o", **common})
    # --init alone switches to the fine-tuning recipe: keep every training value of the default
    # one, the rate included (the architecture comes from the weights either way).
    tuned, _ = resolve({"data": "d", "out": "o", "init": "i", **common})
    skip = {"init", "recipe", "given", "epochs", "aux_logits", *ARCHITECTURE}
    same_recipe = {name: getattr(scratch, name) for name in scratch.__dataclass_fields__
                   if name not in skip and getattr(tuned, name) != getattr(scratch, name)}
    same_recipe["learning_rate"] = scratch.learning_rate
    tuned, _ = resolve({"data": "d", "out": "o", "init": "i", **common, **same_recipe})
    differ = [name for name in scratch.__dataclass_fields__
              if name not in skip and getattr(tuned, name) != getattr(scratch, name)]
    if differ:
        raise SystemExit(f"the two digit runs would differ in {differ}")
    results = []
    for seed in args.seeds:
        settings = dict(epochs=args.epochs, seed=seed, flip=False)
        results.append({
            "seed": seed,
            "scratch": run(f"digits-scratch-{seed}", digits, **settings),
            "from_fashion": run(f"digits-from-fashion-{seed}", digits, **settings,
                                init=str(work / "fashion-run"), **same_recipe),
        })
    mean = {kind: round(float(np.mean([r[kind][-1] for r in results])), 4)
            for kind in ("scratch", "from_fashion")}
    print(json.dumps({
        "date": date.today().isoformat(), "machine": f"{platform.machine()} "
        f"{platform.processor() or platform.system()}",
        "budget": {"fashion_images": args.fashion_images, "pretrain_epochs":
                   args.pretrain_epochs, "digits_epochs": args.epochs,
                   "learning_rate": scratch.learning_rate, **common},
        "fashion_val_top1": pretrained, "digits_val_top1": results,
        "mean_final_val_top1": mean, "seconds": times,
    }, indent=2))


if __name__ == "__main__":
    main()
