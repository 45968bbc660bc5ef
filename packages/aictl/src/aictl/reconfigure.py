"""Change one application's arguments on a running platform; nothing else restarts.

``aictl configure chat --set rag.prompt_template=@prompt.txt`` reads the Serve config that
runs (Serve's REST API), changes the named arguments of one application, checks them with
that application's own builder, and applies the config again. Serve redeploys only the
application whose config changed: the model replicas keep running, and a new prompt, a
new context budget or a new chunk size never reloads a model.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from handler_base.deployment import build_application
from handler_base.errors import describe_validation_error

FILE_PREFIX = "@"
"""A value that starts with it is the text of the file it names."""


class SettingError(ValueError):
    """A ``--set`` that cannot be applied: malformed, unknown, or refused by the builder."""


def parse_setting(text: str) -> tuple[list[str], Any]:
    """``path.to.field=value`` as the keys and the value.

    The value is JSON when it parses as JSON (``0.2``, ``true``, ``{"a": 1}``), the text of
    a file for ``@FILE``, and the text as written otherwise.

    Raises:
        SettingError: No ``=``, an empty key, or a file that cannot be read.
    """
    path, equals, raw = text.partition("=")
    keys = path.strip().split(".")
    if not equals or not all(keys):
        raise SettingError(f"{text!r} is not KEY=VALUE (e.g. rag.temperature=0.2)")
    if raw.startswith(FILE_PREFIX):
        try:
            return keys, Path(raw.removeprefix(FILE_PREFIX)).read_text(encoding="utf-8")
        except OSError as exc:
            raise SettingError(f"cannot read {raw!r}: {exc.strerror}") from None
    try:
        return keys, json.loads(raw)
    except json.JSONDecodeError:
        return keys, raw


def with_settings(
    config: Mapping[str, Any], app: str, settings: Iterable[tuple[list[str], Any]]
) -> dict[str, Any]:
    """A copy of ``config`` whose application ``app`` has ``settings`` in its arguments.

    Raises:
        SettingError: No such application, or a key that goes through a value that is
            not an object.
    """
    changed = copy.deepcopy(dict(config))
    entries = [a for a in changed.get("applications", []) if a.get("name") == app]
    if not entries:
        names = ", ".join(a.get("name", "?") for a in changed.get("applications", []))
        raise SettingError(f"no application {app!r} runs (running: {names})")
    (entry,) = entries
    for keys, value in settings:
        target = entry.setdefault("args", {})
        for depth, key in enumerate(keys[:-1]):
            target = target.setdefault(key, {})
            if not isinstance(target, dict):
                raise SettingError(f"{'.'.join(keys[: depth + 1])} is not an object")
        target[keys[-1]] = value
    return changed


def check_arguments(config: Mapping[str, Any], app: str) -> None:
    """Build ``app`` of ``config`` here, as Serve would, to refuse bad arguments early.

    Building binds the deployment and validates the arguments; it starts nothing.

    Raises:
        SettingError: The builder refused them (the message says which and why).
    """
    (entry,) = [a for a in config["applications"] if a["name"] == app]
    try:
        build_application(entry["import_path"], entry.get("args") or {})
    except ValidationError as exc:
        raise SettingError(
            f"{app} refuses these arguments: {describe_validation_error(exc)}"
        ) from None
