"""Documentation that must keep up with the code."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from pydantic import BaseModel

from chatwright import hookspecs
from chatwright.registry import Plugins
from chatwright.settings import Settings, env_var

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_hook_has_a_docs_section_headed_by_its_signature() -> None:
    text = (DOCS / "plugins.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^### `([^`]+)`$", text, flags=re.MULTILINE))
    for name in Plugins.hook_names():
        params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert f"{name}({params})" in headings, f"docs/plugins.md lacks a section for {name}"


def test_every_setting_is_documented_with_its_env_var() -> None:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    for section, field in Settings.model_fields.items():
        if field.exclude:
            continue
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            # A free-form table per plugin.
            assert f"## `[{section}.<name>]`" in text, f"docs/configuration.md lacks [{section}]"
            continue
        assert f"## `[{section}]`" in text, f"docs/configuration.md lacks [{section}]"
        assert isinstance(model, type)
        for key in model.model_fields:  # type: ignore[attr-defined]
            assert f"| `{key}` | `{env_var(f'{section}.{key}')}`" in text, (
                f"docs/configuration.md lacks {section}.{key}"
            )


def test_cli_reference_is_current() -> None:
    import runpy

    script = Path(__file__).resolve().parent.parent / "scripts" / "cli-reference"
    render = runpy.run_path(str(script))["render"]
    current = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert render() == current, "docs/cli.md is out of date: run scripts/cli-reference"
