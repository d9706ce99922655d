"""The bundled plugins' durations are bounded as the core's are.

`server.stream_keepalive` and `cache.ttl` took any positive number: `inf` or
1e300 were accepted and then failed where a time was computed from them (a
streamed turn's keep-alive timer). They are refused by name, with their bound,
and the bound itself is accepted.
"""

from __future__ import annotations

import pytest

from chatwright.errors import SettingsError
from chatwright.registry import LoadPolicy, Plugins
from chatwright.settings import HOUR, WEEK, env_var, load_settings

LARGEST = {"server.stream_keepalive": HOUR, "cache.ttl": WEEK}


@pytest.mark.parametrize("key", sorted(LARGEST))
@pytest.mark.parametrize("value", ["inf", "nan", "1e300", "-1", "0"])
def test_a_hostile_duration_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, key: str, value: str
) -> None:
    monkeypatch.setenv(env_var(key), value)
    with pytest.raises(SettingsError) as refused:
        load_settings(plugins=Plugins.load(LoadPolicy()))
    text = str(refused.value)
    assert f"setting {key!r} is invalid" in text and env_var(key) in text, text


@pytest.mark.parametrize(("key", "largest"), sorted(LARGEST.items()))
def test_the_bound_is_accepted_and_past_it_is_not(
    monkeypatch: pytest.MonkeyPatch, key: str, largest: int
) -> None:
    plugins = Plugins.load(LoadPolicy())
    monkeypatch.setenv(env_var(key), str(largest))
    section, _, name = key.partition(".")
    settings = load_settings(plugins=plugins)
    assert getattr(getattr(settings, section), name) == largest
    monkeypatch.setenv(env_var(key), str(largest + 1))
    with pytest.raises(SettingsError, match="less than or equal to"):
        load_settings(plugins=plugins)
