"""Reading YAML written by users (parameters, sensor files): safe, bounded, strict about keys.

Three things plain ``yaml.safe_load`` lets through are refused here, each with one line naming the file:

* **Alias bombs.** Anchors and aliases are kept (``&defaults`` / ``*defaults`` are handy), but the
  document's size *with every alias expanded* is counted on the node graph before anything is built,
  and a document over :data:`MAX_NODES` values is refused. PyYAML shares aliased objects, so loading a
  "billion laughs" file is cheap; whatever walks it afterwards (validation, copying, JSON) expands it.
* **Duplicate keys.** YAML says a mapping's keys are unique; PyYAML keeps the last silently.
* **Non-text.** A binary file or a folder gives one line, not a decode traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from a2mae.errors import A2maeError

#: Values (scalars, sequences, mappings) a document may hold once aliases are expanded.
MAX_NODES = 100_000


class YamlError(A2maeError, ValueError):
    """A YAML file is unreadable, malformed, too large once expanded, or repeats a key."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: let PyYAML report it
                continue
            if duplicate:
                raise _Duplicate(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _Duplicate(Exception):
    def __init__(self, key: Any, line: int) -> None:
        super().__init__(key, line)
        self.key, self.line = key, line


def expanded_size(node: yaml.Node, limit: int = MAX_NODES) -> int:
    """Number of values of ``node`` with aliases expanded (stops counting past ``limit``).

    Aliased nodes are the same object in the composed graph, so sizes are memoised per node: the count
    takes time proportional to the document's text, whatever the expansion.
    """
    memo: dict[int, int] = {}

    def size(n: yaml.Node) -> int:
        key = id(n)
        if key in memo:
            return memo[key]
        memo[key] = limit + 1  # a node reached again while being counted: a recursive structure
        if isinstance(n, yaml.SequenceNode):
            total = 1 + sum(size(c) for c in n.value)
        elif isinstance(n, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in n.value)
        else:
            total = 1
        memo[key] = min(total, limit + 1)
        return memo[key]

    return size(node)


def load_text(text: str, source: str) -> Any:
    """Parse one YAML document.

    Args:
        text: The document.
        source: What to call it in errors (a file path).

    Returns:
        The document (None when empty).

    Raises:
        YamlError: Malformed YAML, over :data:`MAX_NODES` values once expanded, or a duplicate key.
    """
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if expanded_size(node) > MAX_NODES:
            raise YamlError(
                f"{source}: over {MAX_NODES} values once its aliases are expanded; "
                "remove the repeated anchors (*alias) or split the file"
            )
        return loader.construct_document(node)
    except _Duplicate as dup:
        raise YamlError(f"{source}: key {dup.key!r} appears twice (line {dup.line}); keep one") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise YamlError(f"{source}: not valid YAML{where}; fix the syntax") from None
    except RecursionError:
        raise YamlError(f"{source}: nested too deeply; simplify the file") from None
    finally:
        loader.dispose()


def load_file(path: str | Path) -> Any:
    """Read and parse a YAML file with :func:`load_text`.

    Raises:
        YamlError: The path is missing, not a regular file, not UTF-8 text, or not valid (see above).
    """
    p = Path(path)
    try:
        if p.is_dir():
            raise YamlError(f"{p}: is a folder; give a YAML file")
        raw = p.read_bytes()
    except FileNotFoundError:
        raise YamlError(f"{p}: file not found") from None
    except OSError as err:
        raise YamlError(f"{p}: cannot read ({err.strerror}); check the path and its permissions") from None
    if b"\x00" in raw:
        raise YamlError(f"{p}: not a text file; give a YAML file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise YamlError(f"{p}: not UTF-8 text; save it as UTF-8 YAML") from None
    return load_text(text, str(p))
