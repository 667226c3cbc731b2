"""docs/api.md, the API reference rendered from the proto's comments: complete, and as `make proto` writes it."""

from __future__ import annotations

import importlib.util
from importlib import resources
from pathlib import Path
from types import ModuleType

from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[2]


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_api_doc", ROOT / "scripts" / "gen_api_doc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def xcron_files() -> list[descriptor_pb2.FileDescriptorProto]:
    data = resources.files("xcron.v1").joinpath("descriptor_set.binpb").read_bytes()
    return [f for f in descriptor_pb2.FileDescriptorSet.FromString(data).file if f.package.startswith("xcron.")]


def test_committed_reference_is_what_make_proto_renders() -> None:
    rendered = generator().render(xcron_files())
    assert (ROOT / "docs" / "api.md").read_text(encoding="utf-8") == rendered, "run `make proto` and commit"


def test_reference_names_every_rpc_message_field_and_enum_value_with_its_comment() -> None:
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    (file,) = xcron_files()
    comments = {tuple(loc.path): " ".join(loc.leading_comments.split()) for loc in file.source_code_info.location}
    for s, service in enumerate(file.service):
        for m, method in enumerate(service.method):
            assert f"| `{method.name}` |" in text and comments[(6, s, 2, m)] in text, method.name
    for i, message in enumerate(file.message_type):
        assert f"{message.name}\n" in text, message.name
        for f, field in enumerate(message.field):
            assert f"| `{field.name}` | {field.number} |" in text, (message.name, field.name)
            assert comments[(4, i, 2, f)].replace("|", "\\|") in text, (message.name, field.name)
    for e, enum in enumerate(file.enum_type):
        for v, value in enumerate(enum.value):
            assert f"| `{value.name}` | {value.number} |" in text and comments[(5, e, 2, v)] in text, value.name


def test_readme_links_the_reference() -> None:
    assert "(docs/api.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
