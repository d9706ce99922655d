"""The plugin as chatwright finds it: entry point, registration, the cache.policy setting."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import chatwright.plugins.eviction
import pytest
from chatwright.registry import LoadPolicy, Plugins
from chatwright.runtime import Runtime
from chatwright.settings import Settings

import chatwright_s3fifo
from chatwright_s3fifo import S3FIFOPolicy

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def test_the_entry_point_is_declared() -> None:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    assert project["entry-points"]["chatwright"] == {"s3fifo": "chatwright_s3fifo"}


def test_cache_policy_s3fifo_picks_the_policy_registered_inline() -> None:
    plugins = Plugins(LoadPolicy())
    plugins.register(chatwright.plugins.eviction, "eviction")
    plugins.register(chatwright_s3fifo, "s3fifo")
    try:
        settings = Settings.model_validate({"cache": {"policy": "s3fifo", "max_entries": 40}})
        policy = Runtime(settings, plugins).cache.policy
        assert isinstance(policy, S3FIFOPolicy)
        assert (policy.max_entries, policy.small_capacity, policy.main_capacity) == (40, 4, 36)
        assert plugins.get("register_eviction_policies", "s3fifo").plugin == "s3fifo"
        assert "lru" in plugins.collect("register_eviction_policies")
    finally:
        plugins.unregister("s3fifo")


def test_the_installed_distribution_is_found_through_its_entry_point() -> None:
    try:
        version = metadata.version("chatwright-s3fifo")
    except metadata.PackageNotFoundError:
        pytest.skip("chatwright-s3fifo is not installed; `pip install` it to run this test")
    plugins = Plugins.load(LoadPolicy(allow=frozenset({"chatwright-s3fifo"})))
    infos = {info.name: info for info in plugins.infos(include_bundled=False)}
    assert infos["s3fifo"].version == version
    assert infos["s3fifo"].error is None
    assert infos["s3fifo"].hooks == ["register_eviction_policies"]
    assert plugins.get("register_eviction_policies", "s3fifo").plugin == "s3fifo"
