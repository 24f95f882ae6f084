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


def table(rows: list[list[str]]) -> str:
    """The Markdown table for the README."""
    today = datetime.date.today().isoformat()
    lines = [
        f"Measured by `make bench` on {today}, {machine()}, Python {sys.version.split()[0]}.",
        "",
        "| figure | measured | target | baseline in the same run | met |",
        "|---|---|---|---|---|",
    ]
    for name, value, unit, target, baseline, met, note in rows:
        extra = f" ({note})" if note else ""
        lines.append(f"| {name} | {value} {unit}{extra} | {target} | {baseline} | {met} |")
    return "\n".join(lines)


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
    text = table(rows)
    print(text)
    if "--no-readme" not in sys.argv:
        rewrite_readme(text)


if __name__ == "__main__":
    main()
