"""Renders the API reference (Markdown) from the descriptor set `make proto` writes with source info.

    python scripts/gen_api_doc.py DESCRIPTOR_SET OUT.md

The proto's comments are the text; the layout is protoc-gen-doc's (one section per service, message
and enum, a table of fields or values in each, type names linking to their section). Only files of
the `xcron.` packages are rendered; types from other files (google.protobuf) link to their docs.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from google.protobuf import descriptor_pb2

Field = descriptor_pb2.FieldDescriptorProto
# SourceCodeInfo paths: field numbers of FileDescriptorProto / DescriptorProto / EnumDescriptorProto /
# ServiceDescriptorProto (see descriptor.proto).
MESSAGE, ENUM, SERVICE, SYNTAX = 4, 5, 6, 12
NESTED_FIELD, NESTED_MESSAGE, NESTED_ENUM, ONEOF = 2, 3, 4, 8
ENUM_VALUE, METHOD = 2, 2

SCALARS = {
    Field.TYPE_DOUBLE: "double",
    Field.TYPE_FLOAT: "float",
    Field.TYPE_INT64: "int64",
    Field.TYPE_UINT64: "uint64",
    Field.TYPE_INT32: "int32",
    Field.TYPE_FIXED64: "fixed64",
    Field.TYPE_FIXED32: "fixed32",
    Field.TYPE_BOOL: "bool",
    Field.TYPE_STRING: "string",
    Field.TYPE_BYTES: "bytes",
    Field.TYPE_UINT32: "uint32",
    Field.TYPE_SFIXED32: "sfixed32",
    Field.TYPE_SFIXED64: "sfixed64",
    Field.TYPE_SINT32: "sint32",
    Field.TYPE_SINT64: "sint64",
}
WELL_KNOWN = "https://protobuf.dev/reference/protobuf/google.protobuf/#"


class Comments:
    def __init__(self, file: descriptor_pb2.FileDescriptorProto) -> None:
        self._by_path = {tuple(loc.path): loc for loc in file.source_code_info.location}

    def __call__(self, *path: int) -> str:
        location = self._by_path.get(path)
        if location is None:
            return ""
        lines = [line.strip() for line in location.leading_comments.strip("\n").splitlines()]
        return "\n".join(lines).strip()


def anchor(full_name: str) -> str:
    return full_name.lower().replace(".", "-")


def one_line(text: str) -> str:
    """A comment for a table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def type_link(field: Field, local: set[str], maps: dict[str, descriptor_pb2.DescriptorProto]) -> str:
    entry = maps.get(field.type_name.lstrip("."))
    if entry is not None:  # map<K, V>: a repeated synthetic MapEntry message
        key, value = entry.field
        return f"map&lt;{type_link(key, local, maps)}, {type_link(value, local, maps)}&gt;"
    if field.type in (Field.TYPE_MESSAGE, Field.TYPE_ENUM):
        name = field.type_name.lstrip(".")
        if name in local:
            shown = f"[{name.rsplit('.', 1)[-1]}](#{anchor(name)})"
        elif name.startswith("google.protobuf."):
            shown = f"[{name}]({WELL_KNOWN}{name.rsplit('.', 1)[-1].lower()})"
        else:
            shown = name
    else:
        shown = SCALARS[field.type]
    return f"repeated {shown}" if field.label == Field.LABEL_REPEATED else shown


def rpc_type(name: str, streaming: bool, local: set[str]) -> str:
    bare = name.lstrip(".")
    link = f"[{bare.rsplit('.', 1)[-1]}](#{anchor(bare)})" if bare in local else bare
    return f"stream {link}" if streaming else link


def walk_messages(
    messages: Iterable[descriptor_pb2.DescriptorProto], prefix: str, path: tuple[int, ...], *, map_entries: bool = False
) -> Iterator[tuple[str, descriptor_pb2.DescriptorProto, tuple[int, ...]]]:
    """Every message, nested ones after their parent; map entries only when asked for (and only them)."""
    for i, message in enumerate(messages):
        full = f"{prefix}.{message.name}"
        here = (*path, i)
        if message.options.map_entry == map_entries:
            yield full, message, here
        yield from walk_messages(message.nested_type, full, (*here, NESTED_MESSAGE), map_entries=map_entries)


def walk_enums(
    file: descriptor_pb2.FileDescriptorProto,
) -> Iterator[tuple[str, descriptor_pb2.EnumDescriptorProto, tuple[int, ...]]]:
    for i, enum in enumerate(file.enum_type):
        yield f"{file.package}.{enum.name}", enum, (ENUM, i)
    for full, message, path in walk_messages(file.message_type, file.package, (MESSAGE,)):
        for i, enum in enumerate(message.enum_type):
            yield f"{full}.{enum.name}", enum, (*path, NESTED_ENUM, i)


def render(files: Sequence[descriptor_pb2.FileDescriptorProto]) -> str:
    out: list[str] = [
        "# xcron API reference",
        "",
        "<!-- Generated from the proto's comments by `make proto` (scripts/gen_api_doc.py); do not edit. -->",
        "",
    ]
    local: set[str] = set()
    maps: dict[str, descriptor_pb2.DescriptorProto] = {}
    for file in files:
        maps.update((n, m) for n, m, _ in walk_messages(file.message_type, file.package, (MESSAGE,), map_entries=True))
        local.update(name for name, _, _ in walk_messages(file.message_type, file.package, (MESSAGE,)))
        local.update(name for name, _, _ in walk_enums(file))
    for file in files:
        comment = Comments(file)
        out += [f"Package `{file.package}`, file `{file.name}`.", ""]
        if header := comment(SYNTAX):
            out += [header, ""]
        for s, service in enumerate(file.service):
            full = f"{file.package}.{service.name}"
            out += [f'## <a id="{anchor(full)}"></a>Service {service.name}', "", comment(SERVICE, s), ""]
            out += ["| RPC | Request | Response | Description |", "|---|---|---|---|"]
            for m, method in enumerate(service.method):
                request = rpc_type(method.input_type, method.client_streaming, local)
                response = rpc_type(method.output_type, method.server_streaming, local)
                text = one_line(comment(SERVICE, s, METHOD, m))
                out.append(f"| `{method.name}` | {request} | {response} | {text} |")
            out.append("")
        out += ["## Messages", ""]
        for full, message, path in walk_messages(file.message_type, file.package, (MESSAGE,)):
            out += [f'### <a id="{anchor(full)}"></a>{full.removeprefix(file.package + ".")}', ""]
            if text := comment(*path):
                out += [text, ""]
            if not message.field:
                out += ["No fields.", ""]
                continue
            out += ["| Field | Number | Type | Description |", "|---|---|---|---|"]
            for f, field in enumerate(message.field):
                text = one_line(comment(*path, NESTED_FIELD, f))
                if field.HasField("oneof_index") and not field.proto3_optional:
                    oneof = message.oneof_decl[field.oneof_index].name
                    text = f"One of `{oneof}`. {text}".strip()
                out.append(f"| `{field.name}` | {field.number} | {type_link(field, local, maps)} | {text} |")
            out.append("")
        out += ["## Enums", ""]
        for full, enum, path in walk_enums(file):
            out += [f'### <a id="{anchor(full)}"></a>{full.removeprefix(file.package + ".")}', ""]
            if text := comment(*path):
                out += [text, ""]
            out += ["| Value | Number | Description |", "|---|---|---|"]
            for v, value in enumerate(enum.value):
                out.append(f"| `{value.name}` | {value.number} | {one_line(comment(*path, ENUM_VALUE, v))} |")
            out.append("")
    return "\n".join(line for line in _squeeze(out)).rstrip("\n") + "\n"


def _squeeze(lines: list[str]) -> Iterator[str]:
    """No two blank lines in a row (an empty comment leaves one)."""
    blank = False
    for line in lines:
        if line == "" and blank:
            continue
        blank = line == ""
        yield line


def main(argv: Sequence[str]) -> int:
    if len(argv) != 2:
        print("usage: gen_api_doc.py DESCRIPTOR_SET OUT.md", file=sys.stderr)
        return 2
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(Path(argv[0]).read_bytes())
    files = [f for f in descriptor_set.file if f.package.startswith("xcron.")]
    Path(argv[1]).parent.mkdir(parents=True, exist_ok=True)
    Path(argv[1]).write_text(render(files), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
