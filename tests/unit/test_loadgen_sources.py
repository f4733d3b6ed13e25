"""Where `consumer produce` gets its events (the real sentry-sdk client, or a folder of event
files) and the progress line it shows on long runs."""

from __future__ import annotations

import io
import random
from collections import Counter
from itertools import islice
from pathlib import Path

import orjson
import pytest

from consumer.errors import BadMessage, ConfigurationError
from consumer.loadgen.files import folder_stream, load_folder
from consumer.loadgen.occurrences import RAW_FILE, messages
from consumer.loadgen.progress import Progress
from consumer.loadgen.sdk import capture_events
from consumer.pipeline.job import Job
from consumer.pipeline.message import decode


def test_a_folder_gives_events_and_raw_bytes(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_bytes(orjson.dumps({"message": "hello"}))
    (tmp_path / "b.json").write_bytes(b'{"message": "no closing brace"')
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "c.json").write_bytes(b"[1, 2, 3]")
    (tmp_path / "notes.txt").write_text("not an event file")
    assert load_folder(tmp_path) == [
        {"message": "hello"},
        b'{"message": "no closing brace"',
        b"[1, 2, 3]",
    ]


def test_a_folder_is_cycled_every_file_once_per_round(tmp_path: Path) -> None:
    for n in range(5):
        (tmp_path / f"{n}.json").write_bytes(orjson.dumps({"n": n}))
    stream = folder_stream(tmp_path, seed=1)
    rounds = [list(islice(stream, 5)) for _ in range(3)]
    for each in rounds:
        assert sorted(sample["n"] for sample in each if isinstance(sample, dict)) == list(range(5))
    assert len({tuple(str(s) for s in each) for each in rounds}) > 1, "same order every round"


def test_a_missing_or_empty_folder_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no folder"):
        load_folder(tmp_path / "absent")
    with pytest.raises(ConfigurationError, match=r"no \*\.json"):
        load_folder(tmp_path)


def test_sentry_samples_wrap_into_messages_the_worker_accepts(samples_dir: Path) -> None:
    samples = load_folder(samples_dir)
    raw = [sample for sample in samples if isinstance(sample, bytes)]
    assert len(raw) == 2, "the two sample files that are not valid JSON are sent raw"
    produced = list(islice(messages(iter(samples), [3], random.Random(0)), len(samples)))
    assert Counter(m.kind for m in produced)[RAW_FILE] == 2
    refused = []
    for message in produced:
        if message.kind != RAW_FILE:
            try:
                job = decode(message.value)
            except BadMessage as bad:
                refused.append(bad.reason)
                continue
            assert isinstance(job, Job)
            assert job.project_id == 3
    # cocoa.json and generic-event.json: Sentry's event schemas refuse them (samples.py).
    assert refused == ["invalid_event_payload"] * 2


def test_sdk_events_are_varied_like_real_traffic() -> None:
    events = capture_events(240, seed=9)
    assert len(events) == 240
    exceptions = [e["exception"]["values"] for e in events if e.get("exception")]
    assert len(exceptions) > 100
    assert all(values[-1]["stacktrace"]["frames"] for values in exceptions)
    assert any(len(values) > 1 for values in exceptions), "no chained exception"
    assert len({values[-1]["type"] for values in exceptions}) >= 5
    assert any(e.get("logentry", {}).get("params") for e in events)
    assert any(not e.get("exception") and not e.get("logentry") for e in events)
    assert len({e.get("level") for e in events}) >= 3
    assert len({(e.get("user") or {}).get("id") for e in events}) > 50
    assert any("ip_address" in (e.get("user") or {}) for e in events)
    assert len({e.get("release") for e in events}) == 5
    assert {e.get("environment") for e in events} >= {"production", "staging", None}
    assert any(e.get("dist") for e in events) and any(not e.get("dist") for e in events)
    agents = {
        e["request"]["headers"]["User-Agent"] for e in events if e.get("request", {}).get("headers")
    }
    assert len(agents) >= 8
    assert any(e.get("fingerprint") for e in events)
    texts = [e.get("message") or (e.get("logentry") or {}).get("formatted") for e in events]
    assert any(isinstance(text, str) and not text.isascii() for text in texts)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_in_a_log_is_a_line_every_so_often() -> None:
    clock, out = _Clock(), io.StringIO()
    progress = Progress(1000, stream=out, log_every=30.0, clock=clock)
    clock.now += 10
    progress.update(100)
    assert out.getvalue() == "", "short runs print nothing"
    clock.now += 20
    progress.update(300)
    line = out.getvalue()
    assert line.endswith("\n") and "300/1,000" in line and "30%" in line
    assert "10 msg/s" in line and "70s left" in line
    progress.close()
    assert out.getvalue() == line


def test_progress_on_a_terminal_redraws_one_line() -> None:
    clock, out = _Clock(), _Terminal()
    progress = Progress(None, stream=out, clock=clock)
    for done in range(1, 6):
        clock.now += 1
        progress.update(done * 100)
    progress.close()
    text = out.getvalue()
    assert text.count("\r") == 6 and text.count("\n") == 1
    assert "500 messages" in text.rsplit("\r", 1)[1]
