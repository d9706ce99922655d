"""Duration settings: bounded above and, where a tiny value would spin a loop, below.

Before, a duration had no upper bound: ``sessions.idle_timeout`` = 1e11 (or
``inf``) made every sweep raise ``OverflowError`` and no idle session was ever
deactivated; ``storage.turn_lease`` = 1e12 failed every turn the same way;
``sessions.heartbeat_interval`` = ``inf`` reached the web page as ``null`` (a
heartbeat every few milliseconds), and ``sessions.sweep_interval`` = 1e-300
spun the sweeper. Each such value is now refused where settings are read, by
its name, with its bounds; the largest allowed ones run a turn and a sweep; and
the page keeps the period it heartbeats at within the setting's bounds whatever
``/api/config`` says.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import BaseModel

from chatwright import testing
from chatwright.errors import SettingsError
from chatwright.plugins.example import assistant as example
from chatwright.plugins.server.app import create_app
from chatwright.plugins.sql.settings import SQLStorageSettings
from chatwright.registry import LoadPolicy, Plugins
from chatwright.runtime import Runtime
from chatwright.sessions import sweep
from chatwright.settings import DAY, HOUR, WEEK, Settings, env_var, load_settings
from tests.harness import EchoModels, pg_storage_settings, storage_for, uvicorn_serving
from tests.test_browser import launch, require_chromium

if TYPE_CHECKING:
    from playwright.async_api import Route

# Every duration setting of the core and of the sql backend, with its largest value.
LARGEST = {
    "models.request_timeout": HOUR,
    "sessions.idle_timeout": WEEK,
    "sessions.sweep_interval": DAY,
    "sessions.heartbeat_interval": HOUR,
    "tools.approval_timeout": 366 * DAY,
    "turns.timeout": DAY,
    "storage.pool_timeout": HOUR,
    "storage.statement_timeout": DAY,
    "storage.busy_timeout": HOUR,
    "storage.turn_lease": DAY,
    "storage.turn_wait": DAY,
    "storage.pool_recycle": DAY,
}
# Values whose loops would spin: refused below these.
SMALLEST = {"sessions.sweep_interval": 0.01, "sessions.heartbeat_interval": 0.1}
DURATION_WORDS = ("timeout", "interval", "lease", "wait", "recycle")

HOSTILE = [
    *(
        (key, value, "less than or equal to")
        for key, largest in LARGEST.items()
        for value in ("inf", "1e300", repr(largest * 2))
    ),
    # NaN fails every bound, but the fault is that it is no number.
    *((key, "nan", "Input should be a number, not nan") for key in LARGEST),
    *((key, "-inf", "greater than") for key in LARGEST),
    ("sessions.sweep_interval", "1e-300", "greater than or equal to 0.01"),
    ("sessions.heartbeat_interval", "1e-9", "greater than or equal to 0.1"),
]


@pytest.fixture
def plugins() -> Plugins:
    return Plugins.load(LoadPolicy())


def test_every_duration_setting_is_bounded() -> None:
    """A duration added to the core or the sql backend gets its bounds too."""
    sections: list[tuple[str, type[BaseModel]]] = [("storage", SQLStorageSettings)]
    for section, field in Settings.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            sections.append((section, field.annotation))
    bounds = {}
    for section, model in sections:
        for key, info in model.model_fields.items():
            if info.annotation is float and any(w in key for w in DURATION_WORDS):
                bounds[f"{section}.{key}"] = next(
                    (m.le for m in info.metadata if getattr(m, "le", None) is not None), None
                )
    assert bounds == LARGEST


def _problem(error: SettingsError, key: str, said: str) -> None:
    text = str(error)
    assert f"setting {key!r} is invalid" in text, text
    assert said in text, text
    assert env_var(key) in text, text  # where to set it


@pytest.mark.parametrize(("key", "value", "said"), HOSTILE)
def test_a_hostile_duration_is_refused_by_name(
    workdir: Path,
    plugins: Plugins,
    monkeypatch: pytest.MonkeyPatch,
    key: str,
    value: str,
    said: str,
) -> None:
    section, _, name = key.partition(".")
    # In the TOML file (TOML has inf and nan), as `chatwright --config` reads it ...
    path = workdir / "chatwright.toml"
    path.write_text(f"[{section}]\n{name} = {value}\n", encoding="utf-8")
    with pytest.raises(SettingsError) as refused:
        load_settings(path, plugins=plugins)
    _problem(refused.value, key, said)
    assert str(path) in str(refused.value)
    # ... and in the environment.
    path.unlink()
    monkeypatch.setenv(env_var(key), value)
    with pytest.raises(SettingsError) as refused:
        load_settings(plugins=plugins)
    _problem(refused.value, key, said)


def test_nan_for_a_setting_that_is_no_number_is_refused_by_its_own_rule(
    workdir: Path, plugins: Plugins, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(env_var("server.auth"), "nan")
    with pytest.raises(SettingsError) as refused:
        load_settings(plugins=plugins)
    _problem(refused.value, "server.auth", "Input should be 'local' or 'jwt'")
    assert "number" not in str(refused.value)


def test_the_bounds_themselves_are_accepted(
    workdir: Path, plugins: Plugins, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, largest in LARGEST.items():
        monkeypatch.setenv(env_var(key), str(largest))
    for key, smallest in SMALLEST.items():
        monkeypatch.setenv(env_var(key), str(smallest))
    settings = load_settings(plugins=plugins)
    assert settings.sessions.idle_timeout == WEEK
    assert settings.sessions.sweep_interval == SMALLEST["sessions.sweep_interval"]
    assert settings.section(SQLStorageSettings).turn_lease == DAY


def _largest(plugins: Plugins, url: str) -> Any:
    sections: dict[str, dict[str, Any]] = {}
    for key, largest in LARGEST.items():
        section, _, name = key.partition(".")
        sections.setdefault(section, {})[name] = largest
    sections["storage"].update(pg_storage_settings(url))
    return testing.settings(plugins, **sections)


async def test_the_largest_durations_run_a_turn_and_a_sweep(sql_url: str) -> None:
    plugins = Plugins.load(LoadPolicy())
    plugins.register(EchoModels(), "test-echo")
    runtime = Runtime(_largest(plugins, sql_url), plugins)
    await runtime.start(upgrade=True)
    try:
        await runtime.storage.agents.create("a", system_prompt="hi", model="echo:x")
        user = f"u-{uuid.uuid4().hex[:6]}"
        chat = (await runtime.storage.sessions.open(user, "a", chat_id=uuid.uuid4())).chat_id
        turn = await runtime.chat(user, "a", chat, "hello")
        assert turn.response
        assert (await sweep(runtime)).deactivated == 0  # idle for less than a week
        later = datetime.now(UTC) + timedelta(seconds=WEEK + 60)
        assert (await sweep(runtime, now=later)).deactivated == 1
    finally:
        await runtime.close()


# -- the web page ---------------------------------------------------------------------

# What /api/config might say, and the heartbeat period (ms) the page then uses.
PERIODS = [
    (None, 60_000),  # what an infinite value became in JSON
    (0, 60_000),
    (-5, 60_000),
    ("60", 60_000),
    (1e-9, 100),
    (0.05, 100),
    (30, 30_000),
    (1e300, 3_600_000),
    (7200, 3_600_000),
]

RECORD_BEATS = """
window.beats = [];
const setIntervalAsGiven = window.setInterval;
window.setInterval = function (callback, ms, ...rest) {
  if (callback && callback.name === "heartbeat") window.beats.push(ms);
  return setIntervalAsGiven.call(window, callback, ms, ...rest);
};
"""


def _config_saying(said: Any) -> Callable[[Route], Awaitable[None]]:
    """A handler of the page's /api/config request: the server's answer with
    ``heartbeat_interval`` set to ``said``."""

    async def config(route: Route) -> None:
        served = await route.fetch()
        body = await served.json()
        body["heartbeat_interval"] = said
        await route.fulfill(response=served, body=json.dumps(body))

    return config


async def test_the_page_heartbeats_within_the_setting_s_bounds(tmp_path: Path) -> None:
    executable = require_chromium()
    from playwright.async_api import async_playwright

    url = f"sqlite+aiosqlite:///{tmp_path / 'page.db'}"
    storage = storage_for(url)
    await storage.upgrade()
    await example.seed(storage, "offline:assistant")
    await storage.close()
    plugins = Plugins.load(LoadPolicy())
    settings = testing.settings(plugins, storage={"url": url}, sessions={"sweep_interval": 3600})
    app = create_app(settings, plugins)
    async with uvicorn_serving(app) as port, async_playwright() as pw:
        browser = await launch(pw, executable)
        try:
            for said, period in PERIODS:
                page = await browser.new_page()
                await page.add_init_script(RECORD_BEATS)
                await page.route("**/api/config", _config_saying(said))
                await page.goto(f"http://127.0.0.1:{port}/")
                await page.wait_for_function("window.beats.length > 0")
                assert await page.evaluate("window.beats") == [period], said
                await page.close()
        finally:
            await browser.close()
