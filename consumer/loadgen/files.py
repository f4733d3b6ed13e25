"""Events from a folder of JSON files (such as Sentry's own sample events).

A file that parses as a JSON object is an event. Any other file (invalid JSON, a list, a bare
string) is kept as its raw bytes and sent as it is: bad input is part of realistic load.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import orjson

from consumer.errors import ConfigurationError
from consumer.loadgen.occurrences import Sample


def load_folder(folder: str | Path) -> list[Sample]:
    """Every `*.json` file under `folder` (recursively, in name order): events, or raw bytes.

    Raises ConfigurationError when the folder is missing or holds no JSON file.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ConfigurationError(f"no folder of event files at {root}")
    samples: list[Sample] = []
    for path in sorted(root.rglob("*.json")):
        raw = path.read_bytes()
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError:
            samples.append(raw)
            continue
        samples.append(document if isinstance(document, dict) else raw)
    if not samples:
        raise ConfigurationError(f"no *.json event files under {root}")
    return samples


def folder_stream(folder: str | Path, seed: int = 0) -> Iterator[Sample]:
    """Endless samples from `folder`: every file once per round, in a fresh random order."""
    samples = load_folder(folder)
    rng = random.Random(seed)
    while True:
        order = list(samples)
        rng.shuffle(order)
        yield from order
