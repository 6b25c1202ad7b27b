"""YAML for specs, hardened against hostile or careless files.

`yaml.safe_load` is safe from code execution but not from these:
- duplicate keys in a mapping: the last one silently wins;
- alias bombs: nine lines of `&a [*b, *b, …]` expand to billions of nodes in anything that
  walks the result (the key-to-line map, JSON Schema, the spec hash), using gigabytes and
  ignoring Ctrl-C; and a recursive alias (`&a [*a]`) never ends at all;
- size: a spec is a page of settings, not a data file.
The document is composed once into nodes (aliases are shared nodes, so this is small), checked
(size of the alias-expanded tree counted from the node graph without expanding it, duplicate
keys), and only then constructed. Every problem is one `InvalidInput` naming file:line.
"""

from __future__ import annotations

from typing import Any

import yaml

from runner.core.errors import InvalidInput
from runner.core.jsonl import read_text

__all__ = ["MAX_NODES", "MAX_SPEC_BYTES", "load_value", "load_yaml", "read_text"]

MAX_SPEC_BYTES = 1_000_000  # a spec is settings; data belong in data files
MAX_NODES = 100_000  # nodes in the document once every alias is expanded

_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: fast, caps flow nesting
_MERGE_TAG = "tag:yaml.org,2002:merge"


def load_yaml(text: str, where: str) -> tuple[Any, dict[tuple, int]]:
    """The YAML document in `text` and a map from every key path to its 1-based line.

    Key paths are tuples of mapping keys (as written) and sequence indices, e.g.
    ("evaluation", "gates", 0). `where` names the file in error messages. Raises
    InvalidInput for invalid YAML, duplicate keys, recursive aliases, more than MAX_NODES
    nodes after alias expansion, or text over MAX_SPEC_BYTES.
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_SPEC_BYTES:
        raise InvalidInput(
            f"spec is {size:,} bytes; the limit is {MAX_SPEC_BYTES:,} (data belong in data files)", where=where
        )
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None, {}
            _check_size(node, where)
            _check_duplicates(node, loader, where)
            lines = _key_lines(node)
            doc = loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        problem = getattr(error, "problem", None) or str(error)
        raise InvalidInput(f"invalid YAML: {problem}", where=f"{where}:{mark.line + 1}" if mark else where) from None
    except RecursionError:
        raise InvalidInput("YAML nested too deeply", where=where) from None
    except (ValueError, TypeError, OverflowError) as error:  # e.g. a date like 2024-13-45
        raise InvalidInput(f"invalid YAML value: {error}", where=where) from None
    return doc, lines


def load_value(raw: str, where: str) -> Any:
    """A command-line value (--set, --only) read as YAML under the same limits as a spec; text that
    is not YAML at all stays the text as written, and an empty value is the empty string."""
    if not raw.strip():
        return ""
    try:
        yaml.compose(raw, Loader=_Loader)  # syntax only: aliases stay shared nodes, nothing is built
    except yaml.YAMLError:
        return raw
    except RecursionError:
        raise InvalidInput("YAML nested too deeply", where=where) from None
    return load_yaml(raw, where)[0]


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_size(root: yaml.Node, where: str) -> None:
    """Count the nodes of the alias-expanded tree from the (small) node graph, without expanding it.

    Iterative post-order walk with each distinct node's expanded size memoised by identity,
    so it costs one step per distinct node whatever the expansion; a node met again while
    its own subtree is being walked is a recursive alias.
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            total = 1 + sum(sizes[id(child)] for child in _children(node))
            on_path.discard(key)
            if total > MAX_NODES:
                raise InvalidInput(
                    f"YAML expands to more than {MAX_NODES:,} nodes (aliases repeating large anchors?)",
                    where=f"{where}:{_line(node)}",
                )
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise InvalidInput("recursive YAML alias (an anchor used inside itself)", where=f"{where}:{_line(node)}")
        on_path.add(key)
        stack.append((node, True))
        for child in reversed(_children(node)):
            child_key = id(child)
            if child_key in on_path:
                raise InvalidInput(
                    "recursive YAML alias (an anchor used inside itself)", where=f"{where}:{_line(child)}"
                )
            if child_key not in sizes:
                stack.append((child, False))


def _check_duplicates(root: yaml.Node, loader: Any, where: str) -> None:
    """A key written twice in one mapping is an error at the second one (PyYAML keeps the last)."""
    seen_nodes: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                    continue  # `<<: *base` merges are overridden by explicit keys by design
                key = (key_node.tag, loader.construct_object(key_node))
                if key in first_line:
                    raise InvalidInput(
                        f"duplicate key {key_node.value!r} (first on line {first_line[key]}); "
                        "YAML would silently keep only the last",
                        where=f"{where}:{_line(key_node)}",
                    )
                first_line[key] = _line(key_node)
        stack.extend(_children(node))


def _key_lines(root: yaml.Node) -> dict[tuple, int]:
    """Every key path of the (alias-expanded, size-checked) document with its 1-based line."""
    lines: dict[tuple, int] = {}
    stack: list[tuple[yaml.Node, tuple]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        lines.setdefault(path, _line(node))
        if isinstance(node, yaml.MappingNode):
            merged: list[yaml.Node] = []
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:
                    merged.extend(value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node])
                    continue
                if not isinstance(key_node, yaml.ScalarNode):
                    continue  # a mapping or list used as a key: no key path names it
                child = (*path, key_node.value)
                lines[child] = _line(key_node)
                stack.append((value_node, child))
            for source in merged:  # merged keys point at the anchor they came from, unless written here
                if isinstance(source, yaml.MappingNode):
                    for key_node, value_node in source.value:
                        if not isinstance(key_node, yaml.ScalarNode):
                            continue
                        child = (*path, key_node.value)
                        if child not in lines:
                            lines[child] = _line(key_node)
                            stack.append((value_node, child))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                stack.append((item, (*path, index)))
    return lines
