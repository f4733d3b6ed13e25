"""The table of the fault suite: one row per scenario, printed at the end of the session and
written to `bench-results/faults-latest.txt` (appended to `bench-results/faults-history.txt`)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from scripts.services import ROOT
from tests.faults.verdict import Verdict

RESULTS = ROOT / "bench-results"
COLUMNS = (
    ("scenario", 22),
    ("sent", 7),
    ("saved", 7),
    ("dead-lettered", 13),
    ("skipped", 7),
    ("lost", 4),
    ("duplicated rows", 15),
    ("time to recover", 24),
    ("wall", 7),
)


def table(verdicts: Sequence[Verdict]) -> str:
    header = " | ".join(name.ljust(width) for name, width in COLUMNS)
    lines = [header, "-+-".join("-" * width for _, width in COLUMNS)]
    for v in verdicts:
        cells = (
            v.scenario,
            str(v.sent),
            str(v.saved),
            str(v.dead_lettered),
            str(v.skipped),
            str(v.lost),
            str(v.duplicated),
            v.recovery_text,
            f"{v.seconds:.0f}s",
        )
        lines.append(
            " | ".join(cell.ljust(width) for cell, (_, width) in zip(cells, COLUMNS, strict=True))
        )
    return "\n".join(lines)


def write(verdicts: Sequence[Verdict], events: int, seed: int, wall: float) -> str:
    """Write the table (with each scenario's fault log and problems) and return the table."""
    text = table(verdicts)
    details = []
    for v in verdicts:
        status = "PASS" if not v.problems else "FAIL"
        details.append(f"\n[{v.scenario}] {status}; dead-letter copies beyond one: "
                       f"{v.dead_letter_copies}")  # fmt: skip
        details.extend(f"  {note}" for note in v.notes)
        details.extend(f"  PROBLEM: {problem}" for problem in v.problems)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    document = (
        f"fault suite {stamp}: FAULTS_EVENTS={events} per scenario, FAULTS_SEED={seed}, "
        f"wall {wall:.0f}s\n\n" + text + "\n" + "\n".join(details) + "\n"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "faults-latest.txt").write_text(document)
    with (RESULTS / "faults-history.txt").open("a") as history:
        history.write(document + "\n")
    return document
