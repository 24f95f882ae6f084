"""Run every benchmark and rewrite the README's performance table with the figures.

Usage: `make bench` (or `python bench/run_all.py [--no-readme] [script ...]`).
"""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path

from common import ROOT, machine

SCRIPTS = [
    "ingest.py",
    "fanout.py",
    "join.py",
    "replay.py",
    "memory.py",
    "latency.py",
    "scale.py",
    "streams.py",
    "cluster.py",
]
BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"


def run(script: str) -> list[list[str]]:
    """The figures one script prints with --tsv, echoed as they come."""
    print(f"== {script}", flush=True)
    here = Path(__file__).parent
    done = subprocess.run(
        [sys.executable, str(here / script), "--tsv"],
        cwd=here,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        print(done.stderr[-2000:], file=sys.stderr)
        return [[script, "error", "", "", "", "no", f"exit {done.returncode}"]]
    rows = [line.split("\t") for line in done.stdout.splitlines() if line.count("\t") == 6]
    for row in rows:
        print("   ", " | ".join(field for field in row if field))
    return rows


def row_line(row: list[str]) -> str:
    """One figure as a row of the Markdown table."""
    name, value, unit, target, baseline, met, note = row
    extra = f" ({note})" if note else ""
    return f"| {name} | {value} {unit}{extra} | {target} | {baseline} | {met} |"


def current_rows() -> list[str]:
    """The figure rows of the README's table as they stand (header and rule left out)."""
    text = (ROOT / "README.md").read_text()
    if BEGIN not in text or END not in text:
        return []
    inside = text.split(BEGIN, 1)[1].split(END, 1)[0]
    rows = [line for line in inside.splitlines() if line.startswith("| ")]
    return rows[1:]


def table(rows: list[list[str]], chosen: list[str]) -> str:
    """The Markdown table for the README.

    With only some scripts chosen, the other rows stay as they were (a row of a re-run
    figure is replaced where it stood), so `run_all.py cluster.py` updates its rows only.
    """
    today = datetime.date.today().isoformat()
    lines = [row_line(row) for row in rows]
    when = f"on {today}"
    if set(chosen) != set(SCRIPTS):
        fresh = {row[0]: line for row, line in zip(rows, lines, strict=True)}
        kept = [fresh.pop(cell(line), line) for line in current_rows()]
        lines = kept + list(fresh.values())
        when += f" ({', '.join(chosen)}; the other rows from the last full run)"
    head = [
        f"Measured by `make bench` {when}, {machine()}, Python {sys.version.split()[0]}.",
        "",
        "| figure | measured | target | baseline in the same run | met |",
        "|---|---|---|---|---|",
    ]
    return "\n".join(head + lines)


def cell(line: str) -> str:
    """The figure name of a table row."""
    return line[2:].split(" | ", 1)[0]


def rewrite_readme(text: str) -> None:
    """Replace what lies between the bench markers of README.md."""
    readme = ROOT / "README.md"
    current = readme.read_text()
    if BEGIN not in current or END not in current:
        raise SystemExit(f"README.md lacks the {BEGIN} / {END} markers")
    head, rest = current.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main() -> None:
    """Run the chosen scripts (all by default) and, unless --no-readme, update README.md."""
    chosen = [a for a in sys.argv[1:] if a.endswith(".py")] or SCRIPTS
    rows = [row for script in chosen for row in run(script)]
    text = table(rows, chosen)
    print(text)
    if "--no-readme" not in sys.argv:
        rewrite_readme(text)


if __name__ == "__main__":
    main()
