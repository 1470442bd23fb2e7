"""Text renderings of a parsed Dockerfile.

- :func:`buildkit`: BuildKit's ``parser/testfiles/*/result`` format, one ``(keyword ...)`` line
  per instruction, strings quoted like Go's ``strconv.Quote``.
- :func:`json_dump`: our AST as JSON (for tools and golden tests).

Both return text ending with exactly one newline; neither raises for any parsed Dockerfile.
Characters that came from invalid UTF-8 in the file (decoded with ``surrogateescape``) print
as ``\\xNN`` in the BuildKit format, as Go prints the raw byte.
"""

from __future__ import annotations

import json
import unicodedata

from .ast import Dockerfile, Heredoc, Node

_SIMPLE = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
           "\\": "\\\\", '"': '\\"'}


def _printable(ch: str) -> bool:
    """Go's strconv.IsPrint: letters, marks, numbers, punctuation, symbols and ASCII space."""
    if ch == " ":
        return True
    return unicodedata.category(ch)[0] in "LMNPS"


def go_quote(s: str) -> str:
    """``s`` as Go's ``strconv.Quote`` writes it (double quotes included)."""
    out = ['"']
    for ch in s:
        code = ord(ch)
        if ch in _SIMPLE:
            out.append(_SIMPLE[ch])
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif 0xDC80 <= code <= 0xDCFF:  # a raw byte kept by surrogateescape
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:  # not a valid rune: Go prints U+FFFD
            out.append("\ufffd")
        elif _printable(ch):
            out.append(ch)
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def _node_text(node: Node) -> str:
    parts = [node.keyword.lower()]
    if node.flags:
        parts.append("[" + " ".join(go_quote(f) for f in node.flags) + "]")
    if node.keyword == "ONBUILD":
        if node.inner is not None:
            parts.append("(" + _node_text(node.inner) + ")")
    else:
        parts.extend(go_quote(a) for a in node.args)
    return " ".join(parts)


def buildkit(df: Dockerfile) -> str:
    """The BuildKit dump: ``(keyword ["--flag"...] "arg"...)`` per node, newline-terminated."""
    return "".join("(" + _node_text(n) + ")\n" for n in df.nodes)


def _heredoc_json(h: Heredoc) -> dict[str, object]:
    return {"name": h.name, "content": h.content, "expand": h.expand, "chomp": h.chomp, "fd": h.fd}


def node_json(node: Node) -> dict[str, object]:
    """One node as a JSON-ready dict."""
    out: dict[str, object] = {
        "instruction": node.keyword,
        "flags": list(node.flags),
        "args": list(node.args),
        "form": "exec" if node.json else "shell",
        "heredocs": [_heredoc_json(h) for h in node.heredocs],
        "start_line": node.span.line,
        "end_line": node.span.end_line,
    }
    if node.inner is not None:
        out["inner"] = node_json(node.inner)
    return out


def json_dump(df: Dockerfile) -> str:
    """Our AST as indented JSON: escape character, directives and nodes; trailing newline.

    Characters that came from invalid UTF-8 stay as lone surrogates in the str; write it with
    ``errors="surrogateescape"`` to get the original bytes back.
    """
    doc = {
        "escape": df.escape,
        "directives": [{"name": k, "value": v} for k, v in df.directives],
        "nodes": [node_json(n) for n in df.nodes],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
