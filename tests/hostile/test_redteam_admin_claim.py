"""The admin claim cannot be pointed at metadata that users write themselves.

On Supabase a signed-in user changes their own ``user_metadata`` (``auth.updateUser``),
and the next token they get carries it signed. A deployment whose
``server.admin_claim`` read a role there would make every user who asks an admin
of all agents; the setting refuses such a path, at load and at ``chatwright serve``.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from chatwright import testing
from tests.harness import assert_error, run

USER_EDITABLE = ["user_metadata.role", "user_metadata", "user_metadata.roles.admin"]


@pytest.mark.parametrize("claim", USER_EDITABLE)
def test_a_claim_in_user_metadata_is_refused(claim: str) -> None:
    with pytest.raises(ValidationError, match="user_metadata, which every user can change"):
        testing.settings(server={"auth": "jwt", "admin_claim": claim})


@pytest.mark.parametrize("claim", ["app_metadata.role", "", "app_metadata.user_metadata"])
def test_claims_users_cannot_write_are_kept(claim: str) -> None:
    assert testing.settings(server={"admin_claim": claim}).server.admin_claim == claim


def test_serve_names_the_setting_and_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATWRIGHT_SERVER__ADMIN_CLAIM", "user_metadata.role")
    assert_error(run("serve", "--port", "0"), "admin_claim", "app_metadata")
