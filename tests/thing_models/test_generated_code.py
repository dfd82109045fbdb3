"""The committed protobuf code is what ``scripts/generate_protos.py`` makes from the protos."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    path = REPO_ROOT / "scripts" / "generate_protos.py"
    spec = importlib.util.spec_from_file_location("generate_protos", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("generate_protos", module)
    spec.loader.exec_module(module)
    return module


def test_committed_generated_code_is_up_to_date(generator: ModuleType) -> None:
    protos = generator.find_protos()
    assert Path("thing_models/proto/thing_message.proto") in protos
    stale = generator.stale()
    assert stale == [], f"regenerate with `python scripts/generate_protos.py`: {stale}"


def test_grpc_stubs_only_for_protos_with_a_service(generator: ModuleType, tmp_path: Path) -> None:
    package = tmp_path / "thing_models" / "api"
    package.mkdir(parents=True)
    (package / "plain.proto").write_text(
        'syntax = "proto3";\npackage t;\n// service Fake {}\nmessage A { int32 x = 1; }\n'
    )
    (package / "svc.proto").write_text(
        'syntax = "proto3";\npackage t;\nmessage B { int32 y = 1; }\n'
        "service Echo {\n  rpc Call(B) returns (B);\n}\n"
    )
    out = tmp_path / "out"
    out.mkdir()
    written = generator.generate(tmp_path, out)
    names = sorted(p.relative_to(out).as_posix() for p in written)
    assert names == [
        "thing_models/api/plain_pb2.py",
        "thing_models/api/plain_pb2.pyi",
        "thing_models/api/svc_pb2.py",
        "thing_models/api/svc_pb2.pyi",
        "thing_models/api/svc_pb2_grpc.py",
    ]
    assert all(p.is_file() for p in written)
    assert not (out / "thing_models/api/plain_pb2_grpc.py").exists()


def test_generate_reports_protoc_errors(generator: ModuleType, tmp_path: Path) -> None:
    package = tmp_path / "security"
    package.mkdir()
    (package / "broken.proto").write_text('syntax = "proto3";\nmessage {\n')
    with pytest.raises(RuntimeError, match=r"protoc failed on security/broken\.proto"):
        generator.generate(tmp_path, tmp_path)
