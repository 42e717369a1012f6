"""Field descriptions for the editor schema, from the docstring under each model attribute.

The configuration models document each key with a string literal right after it (PEP 257's
attribute docstrings). Reading them means parsing the models' source, so it happens only when a
schema is asked for (`xfrmctl config schema`), never when the daemon loads its configuration.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from typing import Any

from pydantic import BaseModel


def attribute_docstrings(model: type[BaseModel]) -> dict[str, str]:
    """Field name -> the string literal that follows its annotated assignment in the class."""
    try:
        source = textwrap.dedent(inspect.getsource(model))
    except (OSError, TypeError):  # no source (frozen app, REPL): the schema just lacks them
        return {}
    body = ast.parse(source).body[0]
    docs: dict[str, str] = {}
    if not isinstance(body, ast.ClassDef):
        return docs
    for node, after in zip(body.body, body.body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def describe_fields(schema: dict[str, Any], models: list[type[BaseModel]]) -> None:
    """Give each property of each model's schema its attribute docstring (over its type's)."""
    definitions = schema.get("$defs", {})
    for model in models:
        node = schema if schema.get("title") == model.__name__ else definitions.get(model.__name__)
        if node is None:
            continue
        properties = node.get("properties", {})
        for name, doc in attribute_docstrings(model).items():
            field = model.model_fields.get(name)
            key = field.alias if field is not None and field.alias else name
            if key in properties:
                properties[key]["description"] = doc
