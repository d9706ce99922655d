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


# -- docs/architecture.md and the layout rules -------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 450
LONG_FILE_REASON = "Longer than 450 lines because"


def source_modules() -> dict[str, Path]:
    """Every module of core/ and plugins/, by its dotted import name."""
    found: dict[str, Path] = {}
    for folder, package in (("core", "chatwright"), ("plugins", "chatwright.plugins")):
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def mapped_modules(text: str) -> list[str]:
    """The modules listed in the module map of docs/architecture.md."""
    section = text.split("## The module map", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^- `(chatwright[\w.]*)` — ", section, flags=re.MULTILINE)


def test_architecture_module_map_lists_every_module_once() -> None:
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    mapped = mapped_modules(text)
    modules = source_modules()
    assert len(mapped) == len(set(mapped)), "docs/architecture.md lists a module twice"
    gone = sorted(set(mapped) - set(modules))
    assert not gone, f"docs/architecture.md lists modules that no longer exist: {gone}"
    missing = sorted(set(modules) - set(mapped))
    assert not missing, f"docs/architecture.md's module map lacks: {missing}"


def test_every_chatwright_name_in_architecture_exists() -> None:
    """`chatwright.x.Y` anywhere in the page is a module, or a name in one."""
    import importlib

    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    modules = source_modules()
    names = set(re.findall(r"`(chatwright(?:\.\w+)+)`", text))
    assert names - set(modules), "the pattern finds names inside modules too"
    for name in sorted(names - set(modules)):
        parts = name.split(".")
        cut = max(n for n in range(1, len(parts) + 1) if ".".join(parts[:n]) in modules)
        value: object = importlib.import_module(".".join(parts[:cut]))
        for attribute in parts[cut:]:
            assert hasattr(value, attribute), f"docs/architecture.md names {name}: no such thing"
            value = getattr(value, attribute)


def test_architecture_public_api_names_exist() -> None:
    """Each name the public API table gives for a module can be imported from it."""
    import importlib

    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## The public API", 1)[1]
    rows = re.findall(r"^\| `(chatwright[\w.]*)` \| (.+) \|$", section, flags=re.MULTILINE)
    assert len(rows) >= 10
    for module_name, exports in rows:
        module = importlib.import_module(module_name)
        # Prose may name a module in passing (`chatwright.tables`) or a member of a
        # class (`section(Model)`): only bare names that start a token are exports.
        for name in re.findall(r"`([A-Za-z_]\w*)`", exports):
            assert hasattr(module, name), f"docs/architecture.md: {module_name} has no {name}"


def test_readme_links_the_architecture() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/architecture.md)" in readme


def test_long_files_say_why_in_their_docstring() -> None:
    """A module of core/ or plugins/ over 450 lines states the reason."""
    import ast

    unexplained = []
    for name, path in source_modules().items():
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) <= MAX_LINES:
            continue
        docstring = ast.get_docstring(ast.parse(text)) or ""
        lines = [line.strip() for line in docstring.splitlines()]
        if not any(line.startswith(LONG_FILE_REASON) for line in lines):
            unexplained.append(f"{name} ({len(text.splitlines())} lines)")
    assert not unexplained, (
        f"over {MAX_LINES} lines with no line starting {LONG_FILE_REASON!r} in the module "
        f"docstring: split by concept, or say why: {unexplained}"
    )


def test_plugin_loading_variables_are_documented() -> None:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    table = text.split("## Plugin loading (environment only)", 1)[1].split("\n## ", 1)[0]
    for variable in (
        "CHATWRIGHT_LOAD_PLUGINS",
        "CHATWRIGHT_DISABLE_PLUGINS",
        "CHATWRIGHT_STRICT_PLUGINS",
        "CHATWRIGHT_TRACE_PLUGINS",
        "CHATWRIGHT_DEBUG",
    ):
        assert f"| `{variable}` |" in table, f"docs/configuration.md lacks {variable}"
