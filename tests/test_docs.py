"""Documentation that must keep up with the code."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from pydantic import BaseModel

from chatwright import hookspecs
from chatwright.registry import LoadPolicy, Plugins
from chatwright.settings import env_var, settings_class

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_hook_has_a_docs_section_headed_by_its_signature() -> None:
    text = (DOCS / "plugins.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^### `([^`]+)`$", text, flags=re.MULTILINE))
    for name in Plugins.hook_names():
        params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert f"{name}({params})" in headings, f"docs/plugins.md lacks a section for {name}"


def test_every_setting_is_documented_with_its_env_var() -> None:
    """The core's keys and the bundled plugins' keys alike."""
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    bundled = Plugins.load(LoadPolicy(allow=frozenset()))
    for section, field in settings_class(bundled).model_fields.items():
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
    # ... and each plugin's keys are under a line saying which plugin provides them.
    for registration in bundled.collect_settings():
        heading = f"## `[{registration.name}]`"
        body = text.split(heading, 1)[1].split("\n## ", 1)[0]
        provided = body.split(f"Provided by the `{registration.plugin}` plugin", 1)
        assert len(provided) == 2, (
            f"docs/configuration.md does not say which keys of [{registration.name}] "
            f"the {registration.plugin} plugin provides"
        )
        for key in registration.value.model_fields:
            assert f"| `{key}` |" in provided[1], f"{registration.name}.{key} is not under it"


def test_cli_reference_is_current() -> None:
    import runpy

    script = Path(__file__).resolve().parent.parent / "scripts" / "cli-reference"
    render = runpy.run_path(str(script))["render"]
    current = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert render() == current, "docs/cli.md is out of date: run scripts/cli-reference"
