"""Init-container entry point: copy the image's workflow notebooks into the user's home.

``python -m cscale_extensions.singleuser.seed_notebooks SRC DEST`` runs before every user server
on Kubernetes (see :mod:`cscale_extensions.hub.kubespawner`), as the user's uid, with the home
volume mounted. It uses :func:`cscale_extensions.notebooksync.sync`, so a notebook the user
changed is never overwritten.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cscale_extensions.notebooksync import sync


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="directory of the template notebooks")
    parser.add_argument("dest", type=Path, help="target directory inside the home")
    args = parser.parse_args(argv)
    if not args.src.is_dir():
        print(f"seed-notebooks: {args.src} is not a directory; nothing copied", file=sys.stderr)
        return 0
    try:
        report = sync(args.src, args.dest)
    except OSError as exc:  # e.g. the target is a link: the server starts anyway
        print(f"seed-notebooks: nothing copied: {exc}", file=sys.stderr)
        return 0
    print(
        f"seed-notebooks: {len(report.created)} new, {len(report.updated)} updated, "
        f"{len(report.kept)} kept (user edits), {len(report.unchanged)} unchanged"
        + (f", {len(report.refused)} not touched (links)" if report.refused else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
