#!/usr/bin/env python3
"""List the sections of a core wasm module (or component) and check the kata
WIT version section.

    wasm-sections.py PLUGIN.wasm            # list sections, imports, exports
    wasm-sections.py --expect 0.1.0 P.wasm  # exit 1 unless kata:wit-version == 0.1.0

Custom sections are printed with their name and size; `kata:wit-version`
also with its UTF-8 content. For a component, the core modules and
components nested in it are listed too (indented): after `kata plugin build`
the `kata:wit-version` section lives in the plugin's embedded core module,
not at the component's top level.
"""
import sys

SECTION_NAMES = {0: "custom", 1: "type", 2: "import", 3: "function", 4: "table",
                 5: "memory", 6: "global", 7: "export", 8: "start", 9: "element",
                 10: "code", 11: "data", 12: "datacount", 13: "tag"}
KINDS = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}


def leb(buf, pos):
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def name(buf, pos):
    n, pos = leb(buf, pos)
    return buf[pos:pos + n].decode("utf-8", "replace"), pos + n


def skip_limits(buf, pos):
    flags = buf[pos]
    pos += 1
    _, pos = leb(buf, pos)
    if flags & 1:
        _, pos = leb(buf, pos)
    return pos


def imports(payload):
    count, pos = leb(payload, 0)
    out = []
    for _ in range(count):
        module, pos = name(payload, pos)
        field, pos = name(payload, pos)
        kind = payload[pos]
        pos += 1
        if kind == 0:
            _, pos = leb(payload, pos)
        elif kind == 1:
            pos = skip_limits(payload, pos + 1)
        elif kind == 2:
            pos = skip_limits(payload, pos)
        elif kind == 3:
            pos += 2
        elif kind == 4:
            pos += 1
            _, pos = leb(payload, pos)
        out.append((module, field, KINDS.get(kind, kind)))
    return out


def exports(payload):
    count, pos = leb(payload, 0)
    out = []
    for _ in range(count):
        field, pos = name(payload, pos)
        kind = payload[pos]
        _, pos = leb(payload, pos + 1)
        out.append((field, KINDS.get(kind, kind)))
    return out


def sections(buf):
    if buf[:4] != b"\0asm":
        raise SystemExit("not a wasm binary")
    layer = int.from_bytes(buf[4:8], "little") >> 16
    pos = 8
    while pos < len(buf):
        sid = buf[pos]
        size, pos = leb(buf, pos + 1)
        payload = buf[pos:pos + size]
        pos += size
        yield sid, payload, layer


def walk(buf, indent=""):
    """Print the sections of `buf`; return the kata:wit-version text found."""
    version = None
    for sid, payload, layer in sections(buf):
        if sid == 0:
            cname, start = name(payload, 0)
            content = payload[start:]
            extra = ""
            if cname == "kata:wit-version":
                version = content.decode("utf-8", "replace")
                extra = f" = {version!r}"
            print(f"{indent}custom  {cname} ({len(content)} bytes){extra}")
        elif layer == 1 and sid in (1, 4):  # nested core module / component
            kind = "core module" if sid == 1 else "component"
            print(f"{indent}{kind} ({len(payload)} bytes)")
            version = walk(payload, indent + "    ") or version
        elif layer == 1:
            pass  # component-level types, imports, aliases…: not listed
        elif sid == 2:
            for module, field, kind in imports(payload):
                print(f"{indent}import  {module} {field} ({kind})")
        elif sid == 7:
            for field, kind in exports(payload):
                print(f"{indent}export  {field} ({kind})")
        else:
            print(f"{indent}section {SECTION_NAMES.get(sid, sid)} ({len(payload)} bytes)")
    return version


def main(argv):
    expect = None
    if len(argv) > 2 and argv[1] == "--expect":
        expect, argv = argv[2], [argv[0]] + argv[3:]
    if len(argv) != 2:
        raise SystemExit(__doc__)
    version = walk(open(argv[1], "rb").read())
    if expect is not None and version != expect:
        print(f"kata:wit-version is {version!r}, expected {expect!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
