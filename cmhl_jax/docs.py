"""Generated blocks in markdown files: text between `<!-- NAME:start -->` and `<!-- NAME:end -->`
is replaced by a script's output, so numbers in the README are never typed by hand.

    python -m cmhl_jax.docs --readme README.md --name results-emotion --from docs/results_emotion.md
"""

from __future__ import annotations

import argparse
from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def replace_marked_block(path: str | Path, name: str, body: str) -> None:
    """Replaces the text between the `name` markers of the file at `path` with `body`."""
    path = Path(path)
    text = path.read_text()
    start_marker, end_marker = markers(name)
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < start:
        raise ValueError(f"{path} has no {start_marker} ... {end_marker} markers")
    path.write_text(text[: start + len(start_marker)] + "\n" + body.strip() + "\n" + text[end:])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Replace a generated block in a markdown file.")
    parser.add_argument("--readme", required=True)
    parser.add_argument("--name", required=True, help="marker name")
    parser.add_argument("--from", dest="source", required=True, help="markdown file to insert")
    parser.add_argument(
        "--section", default=None, help="insert only this '## ' or '### ' section of the file"
    )
    args = parser.parse_args(argv)
    body = Path(args.source).read_text()
    if body.startswith("# "):  # the source's own title
        body = body.split("\n", 1)[1]
    if args.section:
        lines = body.splitlines()
        start = next(i for i, line in enumerate(lines) if line.lstrip("#").strip() == args.section)
        level = len(lines[start]) - len(lines[start].lstrip("#"))
        stop = next(
            (
                i
                for i in range(start + 1, len(lines))
                if lines[i].startswith("#") and len(lines[i]) - len(lines[i].lstrip("#")) <= level
            ),
            len(lines),
        )
        body = "\n".join(lines[start + 1 : stop])
    replace_marked_block(args.readme, args.name, body + f"\n\n(Inserted from `{args.source}`.)")


if __name__ == "__main__":
    main()
