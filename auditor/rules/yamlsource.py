"""YAML read for data files a person writes: dates stay strings, duplicate keys are errors, and
every value can be traced back to its line (so an error can name the file and line)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's, when PyYAML has it


def safe_load(text: str | bytes) -> Any:
    """``yaml.safe_load`` with libyaml's parser when there is one (about ten times faster: the
    data files shipped with the tool are read at every audit)."""
    return yaml.load(text, Loader=SAFE_LOADER)


class _Loader(SAFE_LOADER):  # type: ignore[misc,valid-type]
    """The safe loader (libyaml's when PyYAML has it) without the timestamp resolver:
    ``date: 2026-11-24`` stays the string."""


_Loader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass(frozen=True)
class SchemaError:
    """One way a document fails its JSON Schema, located: ``path`` into the data, its line,
    and ``message`` as ``where: what`` (``rules/0/severity: 'urgent' is not one of ...``)."""

    path: tuple[str | int, ...]
    line: int | None
    message: str


class YamlProblem(ValueError):
    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class Document:
    """A parsed YAML document: its data and its node tree, for line numbers."""

    def __init__(self, text: str) -> None:
        loader = _Loader(text)
        try:
            self.node = loader.get_single_node()
            self.data = loader.construct_document(self.node) if self.node is not None else None
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            raise YamlProblem(mark.line + 1 if mark else None,
                              f"invalid YAML: {err.problem or err.context}") from None
        except yaml.YAMLError as err:
            raise YamlProblem(None, f"invalid YAML: {err}") from None
        finally:
            loader.dispose()
        if self.node is not None:
            _check_duplicate_keys(self.node)

    def line(self, path: Sequence[str | int]) -> int | None:
        """The 1-based line of the value at ``path`` (keys and list indexes), or of the deepest
        part of it that exists."""
        node = self.node
        if node is None:
            return None
        line = node.start_mark.line + 1
        for part in path:
            child = None
            if isinstance(node, yaml.MappingNode):
                child = next((value for key, value in node.value if key.value == part), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                child = node.value[part]
            if child is None:
                break
            node, line = child, child.start_mark.line + 1
        return line


    def schema_errors(self, schema: Mapping[str, Any]) -> list[SchemaError]:
        """Every error of the data against ``schema`` (draft 2020-12), in path order."""
        from jsonschema import Draft202012Validator  # slow to import; most runs never validate

        validator = Draft202012Validator(schema)
        out = []
        for err in sorted(validator.iter_errors(self.data), key=lambda e: list(map(str, e.absolute_path))):
            path = tuple(err.absolute_path)
            where = "/".join(str(p) for p in path) or "(top)"
            out.append(SchemaError(path, self.line(path), f"{where}: {_best_message(err)}"))
        return out


def _best_message(err: Any) -> str:
    """For oneOf/anyOf, the message of the alternative that got furthest, not the summary."""
    if err.validator in ("oneOf", "anyOf") and err.context:
        return min(err.context, key=lambda e: len(list(e.absolute_path))).message
    return err.message


def _check_duplicate_keys(node: Any) -> None:
    stack = [node]
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in seen:
                        raise YamlProblem(key.start_mark.line + 1, f"duplicate key {key.value!r}")
                    seen.add(key.value)
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
