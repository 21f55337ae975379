"""The latest figures, kept in a file: `bench/results/latest.md` unless told otherwise.

Each section's printed output is copied, as printed, into its own block of the file, headed by
the date, git commit, command and machine of the run that measured it. A run rewrites only the
blocks of the sections it ran, so `--only kill` leaves the other sections' figures (and their
dates) as they were. A section that could not run keeps its last figures, with a line saying
when and why the latest attempt failed.
"""

from __future__ import annotations

import io
import re
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from bench.common import ROOT

DEFAULT_PATH = ROOT / "bench" / "results" / "latest.md"

TITLES = {
    "history": "History per tool call",
    "throughput": "Throughput: governed runs against a bare workflow",
    "policy": "Policy decision time",
    "latency": "Approval round trip",
    "kill": "Kill switch",
    "idle": "Runs waiting for approval",
    "long": "A long run through continue-as-new",
}

# A block is everything between its two markers; the markers name the section.
_BLOCK = re.compile(r"<!-- bench:(?P<name>[a-z]+) -->\n(?P<body>.*?)<!-- /bench:(?P=name) -->\n", re.DOTALL)
_FAILED_PREFIX = "**Latest attempt failed**"

# A section's printed output is bounded before it goes into the file: a runaway traceback or a
# table gone wrong must not make the committed file unreadable.
MAX_SECTION_CHARS = 64_000


class _Tee(io.TextIOBase):
    """Writes go to the terminal as before and into a copy kept for the file."""

    def __init__(self, terminal: TextIO) -> None:
        self.terminal = terminal
        self.copy = io.StringIO()

    def write(self, s: str) -> int:
        self.copy.write(s)
        return self.terminal.write(s)

    def flush(self) -> None:
        self.terminal.flush()


@contextmanager
def captured(terminal: TextIO) -> Iterator[io.StringIO]:
    """Everything printed inside the block, still printed, and kept in the StringIO yielded."""
    tee = _Tee(terminal)
    with redirect_stdout(tee):  # type: ignore[type-var]  # a TextIOBase is what print needs
        yield tee.copy


def git_commit() -> str:
    """The commit the bench ran from, and whether the tree had changes outside the results."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, cwd=ROOT, timeout=20
        ).stdout.strip()
        # The results file is rewritten by every run: its own changes do not make the code dirty.
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", ".", ":(exclude)bench/results"],
            capture_output=True, text=True, cwd=ROOT, timeout=20,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError) as e:
        return f"? ({type(e).__name__})"
    if not head:
        return "? (not a git checkout)"
    return f"{head} + uncommitted changes" if dirty else head


@dataclass
class SectionRun:
    """One section as one run measured it."""

    name: str
    ok: bool
    output: str
    date: str
    commit: str
    command: str
    machine: str
    sizes: str
    error: str = ""

    def block(self) -> str:
        text = self.output.strip("\n")
        if len(text) > MAX_SECTION_CHARS:
            text = text[:MAX_SECTION_CHARS] + f"\n... (cut at {MAX_SECTION_CHARS:,} characters)"
        return (
            f"<!-- bench:{self.name} -->\n"
            f"## {TITLES[self.name]} (`{self.name}`)\n\n"
            f"- measured: {self.date} UTC, commit {self.commit}\n"
            f"- command: `{self.command}`\n"
            f"- sizes: {self.sizes}\n"
            f"- machine: {self.machine}\n\n"
            f"```text\n{text}\n```\n"
            f"<!-- /bench:{self.name} -->\n"
        )


def read_blocks(path: Path) -> dict[str, str]:
    """The blocks of the file as it is, by section; none if there is no file yet."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    return {m["name"]: m.group(0) for m in _BLOCK.finditer(text) if m["name"] in TITLES}


def _failed_over(previous: str, run: SectionRun) -> str:
    """The last good figures of a section, under a line saying the latest attempt failed."""
    note = f"{_FAILED_PREFIX} on {run.date} UTC (commit {run.commit}, `{run.command}`): {run.error[:500]}\n\n"
    head, _, rest = previous.partition("\n")
    rest = "\n".join(line for line in rest.split("\n") if not line.startswith(_FAILED_PREFIX))
    title, _, body = rest.partition("\n\n")
    return f"{head}\n{title}\n\n{note}{body.lstrip(chr(10))}"


def update(path: Path, runs: Sequence[SectionRun], order: Sequence[str]) -> None:
    """Rewrites the blocks of `runs` in the file at `path`, keeps the others, in `order`."""
    blocks = read_blocks(path)
    for run in runs:
        previous = blocks.get(run.name)
        blocks[run.name] = _failed_over(previous, run) if not run.ok and previous else run.block()
    head = (
        "# Airlock bench: latest figures\n\n"
        "Written by `make bench` (`python -m bench.run`); each section is the output of the last run that\n"
        "measured it, with that run's date, commit, command and machine. A partial run (`--only X`) rewrites\n"
        "only its own sections. How each figure is measured: [bench/README.md](../README.md). Compare ratios\n"
        "measured within one run, not absolute times across runs or machines.\n"
    )
    body = "\n".join(blocks[name] for name in order if name in blocks)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{head}\n{body}")
    tmp.replace(path)
