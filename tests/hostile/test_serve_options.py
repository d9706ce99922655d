"""`serve --port` and `--workers` out of range are named as the options given.

They were checked only as settings, so the error told the user to fix
CHATWRIGHT_SERVER__PORT or [server] in chatwright.toml, which they had not set.
"""

from __future__ import annotations

import pytest

from tests.harness import run


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--port", "99999"), "'--port': 99999 is not in the range 0<=x<=65535"),
        (("--port", "-1"), "'--port': -1 is not in the range"),
        (("--workers", "0"), "'--workers': 0 is not in the range x>=1"),
    ],
)
def test_an_option_out_of_range_is_named(args: tuple[str, ...], named: str) -> None:
    result = run("serve", *args)
    assert result.exit_code == 2, result.output
    assert named in result.output
    assert "CHATWRIGHT_SERVER" not in result.output
