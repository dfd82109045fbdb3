"""``cloud-registry``: command-line entry point. Its commands arrive with the issue that builds
the package; until then it says so instead of failing with an import error."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

__all__ = ["main"]


def _version() -> str:
    try:
        return version("community-iot-edge")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cloud-registry",
        description="cloud-registry has no commands yet: they are being built (see the project's "
        "issues). Use thing-model for the thing-model tools.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.parse_args(argv)
    parser.print_help()
    return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
