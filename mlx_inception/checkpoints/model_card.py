"""The README.md model card pushed with a weights directory, written from its config."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import mlx.core as mx

from ..model import IMAGENET_MEAN, IMAGENET_STD, InceptionV3Config

BN_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def parameter_count(weights: Mapping[str, mx.array]) -> int:
    """Return the number of learned parameters (BatchNorm running statistics excluded)."""
    return sum(int(value.size) for key, value in weights.items() if not key.endswith(BN_STATISTICS))


def storage_dtype(weights: Mapping[str, mx.array]) -> str:
    """Return the dtype most parameters are stored in, e.g. ``float32``."""
    counts: dict[str, int] = {}
    for key, value in weights.items():
        if not key.endswith(BN_STATISTICS):
            name = str(value.dtype).removeprefix("mlx.core.")
            counts[name] = counts.get(name, 0) + int(value.size)
    return max(counts, key=counts.get) if counts else "float32"


def _normalisation(config: InceptionV3Config) -> str:
    mean, std = config.preprocessing.mean, config.preprocessing.std
    if all(abs(m - 0.5) < 1e-9 for m in mean) and all(abs(s - 0.5) < 1e-9 for s in std):
        return "mean = std = 0.5 per channel, i.e. (x - 0.5) / 0.5 with x in [0, 1]"
    if tuple(mean) == tuple(IMAGENET_MEAN) and tuple(std) == tuple(IMAGENET_STD):
        return f"ImageNet mean {list(mean)} and std {list(std)}"
    return f"mean {list(mean)}, std {list(std)}"


def _labels(config: InceptionV3Config) -> str:
    if config.labels == "imagenet-1k":
        return "the 1000 ImageNet-1k classes (torchvision's names, shipped with mlx-inception)"
    if isinstance(config.labels, list):
        shown = ", ".join(config.labels[:8])
        more = f", ... ({len(config.labels)} in all)" if len(config.labels) > 8 else ""
        return f"{len(config.labels)} classes stored in config.json: {shown}{more}"
    return f"{config.num_classes} unnamed classes (indices 0..{config.num_classes - 1})"


def _accuracy(source: Mapping[str, Any]) -> list[str]:
    lines = []
    measured = source.get("accuracy")
    if isinstance(measured, Mapping):
        lines.append(
            f"- Measured for these weights: top-1 {measured.get('top1')}%, top-5 "
            f"{measured.get('top5')}% on {measured.get('dataset', 'an unnamed set')}"
            + (f" ({measured['protocol']})" if measured.get("protocol") else "")
        )
    reported = source.get("reported_accuracy")
    if isinstance(reported, Mapping):
        lines.append(
            f"- Reported for the source weights `{source.get('registry_name', 'unknown')}`: "
            f"top-1 {reported.get('top1')}%, top-5 {reported.get('top5')}% on "
            f"{reported.get('dataset', 'ImageNet-1k validation')}, by "
            f"{reported.get('reported_by', 'their authors')}. Not re-measured here; weights "
            "that were fine-tuned since differ."
        )
    if not lines:
        lines.append(
            "- Not measured. `mlx-inception evaluate` measures top-1/top-5 on an image folder."
        )
    return lines


def render_model_card(
    config: InceptionV3Config,
    weights: Mapping[str, mx.array],
    repo_id: str,
    license: str | None = None,
) -> str:
    """Return a Hub model card (YAML front matter + Markdown) for a weights directory."""
    source = dict(config.source or {})
    license = license or source.get("license")
    base_model = source.get("repo_id") if source.get("repo_id") != repo_id else None
    front = ["---", "library_name: mlx", "pipeline_tag: image-classification"]
    front.append(f"license: {license}" if license else "license: other")
    front += ["tags:", "- mlx", "- mlx-inception", "- inception-v3", "- image-classification"]
    if config.labels == "imagenet-1k":
        front += ["datasets:", "- imagenet-1k"]
    if base_model:
        front.append(f"base_model: {base_model}")
    front.append("---")

    pre = config.preprocessing
    aux = "with" if config.aux_logits else "without"
    params = parameter_count(weights)
    source_lines = []
    for key in ("registry_name", "repo_id", "revision", "commit", "file", "sha256"):
        if source.get(key):
            source_lines.append(f"- {key.replace('_', ' ')}: `{source[key]}`")
    if not source_lines:
        source_lines.append("- not recorded (trained or converted without a named source)")

    body = [
        f"# {repo_id.split('/')[-1]}",
        "",
        "Inception-v3 (Szegedy et al., *Rethinking the Inception Architecture for Computer "
        "Vision*, arXiv 1512.00567) for [MLX](https://github.com/ml-explore/mlx), in the format "
        "of mlx-inception: `model.safetensors` (NHWC, torchvision "
        "parameter names) beside `config.json`.",
        "",
        "## Architecture",
        "",
        f"- Inception-v3 as torchvision builds it, {config.num_classes} classes, {aux} the "
        f"auxiliary classifier; {params:,} parameters stored as {storage_dtype(weights)}",
        f"- transform_input: {config.transform_input}; average pools count padding: "
        f"{config.pool_count_include_pad}; dropout {config.dropout}",
        "",
        "## Source weights",
        "",
        *source_lines,
        "",
        "## Preprocessing",
        "",
        f"- Resize the shorter side to {pre.resize_size} px ({pre.interpolation}), centre-crop "
        f"{pre.crop_size} x {pre.crop_size}, scale to [0, 1]",
        f"- Normalise with {_normalisation(config)}",
        "- Input layout NHWC (batch, height, width, RGB)",
        "",
        "## Labels",
        "",
        f"- {_labels(config)}",
        "",
        "## Accuracy",
        "",
        *_accuracy(source),
        "",
        "## Licence",
        "",
        f"- {license}" if license else "- Not stated by the uploader.",
        "",
        "## How to use",
        "",
        "```bash",
        "pip install mlx-inception",
        f"mlx-inception download {repo_id}",
        "```",
        "",
        "```python",
        "import mlx.core as mx",
        "import mlx_inception",
        "",
        f'model = mlx_inception.load("{repo_id}")  # downloads once, then loads from the cache',
        "logits = model(mx.zeros((1, 299, 299, 3)))  # NHWC, eval mode",
        "print(model.config.preprocessing)",
        "```",
        "",
        "## config.json",
        "",
        "```json",
        json.dumps(config.to_dict(), indent=2)
        if not isinstance(config.labels, list)
        else json.dumps({**config.to_dict(), "labels": f"[{len(config.labels)} names]"}, indent=2),
        "```",
        "",
    ]
    return "\n".join(front + [""] + body)


__all__ = ["parameter_count", "render_model_card", "storage_dtype"]
