"""Internationalised host names are allowed in their IDNA (``xn--``) form.

The HTTP client connects to the IDNA form of a name; ``allowed_hosts`` is
compared with that form, and an entry written in Unicode is kept in it.
"""

from __future__ import annotations

import pytest
from local_server import LocalServer
from test_http_tool import build, call, error, load

from chatwright.registry import Plugins


@pytest.mark.parametrize(
    ("url", "hosts"),
    [
        ("https://xn--bcher-kva.example/items", ["xn--bcher-kva.example"]),
        ("https://bücher.example/items", ["bücher.example"]),
        ("https://bücher.example/items", ["xn--bcher-kva.example"]),
        ("https://xn--bcher-kva.example:8443/items", ["Bücher.example:8443"]),
    ],
)
async def test_an_internationalised_host_can_be_allowed(
    plugins: Plugins, url: str, hosts: list[str]
) -> None:
    report = await load(plugins, {"url": url, "allowed_hosts": hosts})
    assert report.ok, [p.brief() for p in report.problems]


async def test_another_internationalised_host_is_still_refused(plugins: Plugins) -> None:
    report = await load(
        plugins, {"url": "https://bücher.example/items", "allowed_hosts": ["buecher.example"]}
    )
    assert not report.ok


async def test_a_redirect_to_an_internationalised_host_is_checked_in_its_idna_form(
    plugins: Plugins, server: LocalServer
) -> None:
    config = {
        "url": f"{server.base}/redirect?to=https://b%C3%BCcher.example/",
        "allowed_hosts": ["127.0.0.1", "buecher.example"],
    }
    tool = await build(plugins, config)
    assert error(await call(tool)) == (
        "redirect to host 'xn--bcher-kva.example' refused: it is not in allowed_hosts"
    )
