"""Copies the table of the last access check (build/access/access-check-readme.md) into README.md between its
markers: `python -m tests.deploy.access.update_readme` after a change to the deploy or the stack's policies."""

from __future__ import annotations

from pathlib import Path

from .check import README_BEGIN, README_END

ROOT = Path(__file__).resolve().parents[3]


def main() -> None:
    readme = ROOT / "README.md"
    head, rest = readme.read_text().split(README_BEGIN)
    _, tail = rest.split(README_END)
    table = (ROOT / "build" / "access" / "access-check-readme.md").read_text()
    readme.write_text(head + README_BEGIN + "\n" + table + README_END + tail)


if __name__ == "__main__":
    main()
