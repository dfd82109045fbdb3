"""Regenerate the Python code of every ``.proto`` file in the repository's packages.

Usage (from anywhere)::

    python scripts/generate_protos.py          # write *_pb2.py, *_pb2.pyi (and *_pb2_grpc.py)
    python scripts/generate_protos.py --check  # exit 1 when committed code is out of date

Each proto is compiled by ``grpc_tools.protoc`` with the repository root as the only import root,
so ``pkg/sub/x.proto`` becomes the module ``pkg.sub.x_pb2``. gRPC stubs (``*_pb2_grpc.py``) are
generated only for protos that declare a ``service``. The output depends only on the proto files
and the pinned grpcio-tools/protobuf versions, so the result is reproducible.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Top-level packages searched for ``.proto`` files.
PACKAGES = (
    "thing_models",
    "protocol_adapters",
    "edge_agent",
    "cloud_registry",
    "firmware_ota",
    "security",
)
_SERVICE_RE = re.compile(r"^\s*service\s+\w+\s*\{", re.MULTILINE)
_COMMENT_RE = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)


def find_protos(root: Path = REPO_ROOT) -> list[Path]:
    """Every ``.proto`` under the packages of ``root``, relative to ``root``, sorted."""
    found: list[Path] = []
    for package in PACKAGES:
        base = root / package
        if base.is_dir():
            found.extend(p.relative_to(root) for p in base.rglob("*.proto"))
    return sorted(found)


def has_service(proto: Path) -> bool:
    """True when the proto file declares a gRPC ``service``."""
    text = _COMMENT_RE.sub("", proto.read_text(encoding="utf-8"))
    return _SERVICE_RE.search(text) is not None


def outputs(proto: Path, root: Path = REPO_ROOT) -> list[Path]:
    """The generated files of ``proto`` (relative to the output root)."""
    stem = proto.with_suffix("")
    files = [stem.with_name(stem.name + "_pb2.py"), stem.with_name(stem.name + "_pb2.pyi")]
    if has_service(root / proto):
        files.append(stem.with_name(stem.name + "_pb2_grpc.py"))
    return files


def generate(root: Path = REPO_ROOT, out_dir: Path | None = None) -> list[Path]:
    """Compile every proto of ``root`` into ``out_dir`` (default: in place); return the files."""
    out = root if out_dir is None else out_dir
    well_known = resources.files("grpc_tools") / "_proto"
    written: list[Path] = []
    for proto in find_protos(root):
        args = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{root}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--pyi_out={out}",
        ]
        if has_service(root / proto):
            args.append(f"--grpc_python_out={out}")
        args.append(str(proto))
        result = subprocess.run(args, cwd=root, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"protoc failed on {proto}:\n{result.stderr}")
        written.extend(out / f for f in outputs(proto, root))
    return written


def stale(root: Path = REPO_ROOT) -> list[Path]:
    """Generated files that are missing or differ from a fresh generation (relative paths)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(root, Path(tmp))
        bad: list[Path] = []
        for path in fresh:
            rel = path.relative_to(tmp)
            committed = root / rel
            if not committed.is_file() or not filecmp.cmp(path, committed, shallow=False):
                bad.append(rel)
        return bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only report out-of-date files")
    args = parser.parse_args(argv)
    if args.check:
        bad = stale()
        for rel in bad:
            print(f"out of date: {rel}", file=sys.stderr)
        return 1 if bad else 0
    for path in generate():
        print(path.relative_to(REPO_ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
