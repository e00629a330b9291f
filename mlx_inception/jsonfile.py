"""Read a JSON file that may be hostile: bounded in bytes and nesting, or one clear line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import InceptionError

# A config.json with 100,000 labels is a few MB; a run's trainer_state.json with years of
# epoch records well under that. Anything larger is not one of this project's files.
MAX_JSON_BYTES = 16 * 2**20
# This project's files nest 4 levels deep; json's parser recurses once per level, so a file of
# "[[[[..." would otherwise end in a RecursionError deep inside it.
MAX_JSON_DEPTH = 32


def json_depth(value: Any) -> int:
    """Return how deeply ``value`` (parsed JSON) nests lists and objects (a number: 0)."""
    depth, level = 0, [value]
    while level:
        containers = [v for v in level if isinstance(v, dict | list)]
        if not containers:
            break
        depth += 1
        level = [item for v in containers for item in (v.values() if isinstance(v, dict) else v)]
    return depth


def parse_json(text: str | bytes, what: str, error_type: type[InceptionError]) -> Any:
    """Return parsed ``text``; raise ``error_type`` naming ``what`` when it is not bounded JSON."""
    if len(text) > MAX_JSON_BYTES:
        raise error_type(f"{what}: {len(text):,} bytes, over the {MAX_JSON_BYTES:,} this "
                         "project's JSON files may have")
    try:
        data = json.loads(text)
    except RecursionError:
        data = None
        depth = MAX_JSON_DEPTH + 1
    except (ValueError, TypeError) as error:  # includes UnicodeDecodeError
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise error_type(f"{what}: not valid JSON ({reason[:120]})") from None
    else:
        depth = json_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise error_type(f"{what}: nested more than {MAX_JSON_DEPTH} levels deep, which "
                         "this project's JSON files never are")
    return data


def read_json(
    path: str | os.PathLike, error_type: type[InceptionError], what: str | None = None
) -> Any:
    """Return the parsed JSON file at ``path``; one ``error_type`` line if it is unreadable,
    larger than ``MAX_JSON_BYTES``, not UTF-8 JSON or nested deeper than ``MAX_JSON_DEPTH``.

    A missing file raises FileNotFoundError, for the caller to explain in its own words.
    """
    path = Path(path)
    what = what or str(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_JSON_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(2, "No such file", str(path)) from None
    except OSError as error:
        raise error_type(f"{what}: cannot read it ({error.strerror or error})") from None
    return parse_json(data, what, error_type)
