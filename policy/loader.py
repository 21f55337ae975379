"""Reads a policy file and refuses a bad one with the line and the reason.

YAML is parsed into a node tree first so every error can point at a line: syntax errors, keys
given twice (PyYAML would silently keep the last one, which is how a policy quietly loosens), and
every schema error pydantic reports, mapped back from its location to the node it came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from contracts.policy import Policy


class PolicyError(ValueError):
    """A policy file that cannot be used, with every problem found and where it is."""


def _duplicate_keys(node: yaml.Node, source: str) -> list[str]:
    problems: list[str] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key, value in node.value:
            line = key.start_mark.line + 1
            if not isinstance(key, yaml.ScalarNode):
                problems.append(f"{source}:{line}: a key must be a plain name, not a list or a mapping")
                continue
            if key.value == "<<":
                problems.append(f"{source}:{line}: merge keys (<<) are not allowed in a policy")
                continue
            if key.value in seen:
                problems.append(f"{source}:{line}: key {key.value!r} is given twice (first at line {seen[key.value]})")
            else:
                seen[key.value] = line
            problems += _duplicate_keys(value, source)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            problems += _duplicate_keys(item, source)
    return problems


def _line_of(node: yaml.Node, loc: tuple[int | str, ...]) -> int:
    """The line of the deepest node on `loc`'s path that exists in the file."""
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if str(k.value) == str(part)), None)
            if match is None:
                key = next((k for k, _ in node.value if str(k.value) == str(part)), None)
                return key.start_mark.line + 1 if key is not None else line
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return line
        line = node.start_mark.line + 1
    return line


def _construct(root: yaml.Node, source: str) -> Any:
    """Python values from the node tree; a value that cannot be read is named with its line."""
    loader = yaml.SafeLoader("")

    def check(node: yaml.Node) -> None:
        if isinstance(node, yaml.ScalarNode):
            try:
                loader.construct_object(node, deep=True)
            except yaml.YAMLError as e:
                raise _yaml_error(e, source) from None
            except (ValueError, TypeError, AttributeError, OverflowError) as e:
                # PyYAML's constructors raise these for tagged values such as `!!int abc`.
                line = node.start_mark.line + 1
                raise PolicyError(f"{source}:{line}: cannot read {node.value!r} as {node.tag}: {e}") from None
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                check(item)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                check(key)
                check(value)

    check(root)
    try:
        return loader.construct_document(root)
    except yaml.YAMLError as e:
        raise _yaml_error(e, source) from None


def _yaml_error(error: yaml.YAMLError, source: str) -> PolicyError:
    mark = getattr(error, "problem_mark", None)
    where = f"{source}:{mark.line + 1}" if mark is not None else source
    problem = getattr(error, "problem", None) or str(error)
    return PolicyError(f"{where}: not valid YAML: {problem}")


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        raise _yaml_error(e, source) from None
    except RecursionError:
        raise PolicyError(f"{source}:1: nested too deeply to be a policy") from None
    if root is None:
        raise PolicyError(f"{source}: the policy file is empty")
    problems = _duplicate_keys(root, source)
    if problems:
        raise PolicyError("\n".join(problems))
    data = _construct(root, source)
    try:
        return Policy.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors(include_url=False):
            loc = tuple(p for p in err["loc"] if not str(p).startswith("function-after"))
            path = ".".join(str(p) for p in loc) or "(top level)"
            lines.append(f"{source}:{_line_of(root, loc)}: {path}: {err['msg']}")
        raise PolicyError("\n".join(lines)) from None


def load_policy(path: Path | str) -> Policy:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise PolicyError(f"{path}: cannot read the policy file: {e.strerror}") from None
    return parse_policy(text, str(path))
