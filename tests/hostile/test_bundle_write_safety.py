"""A bundle that leaves a tool row's approval or active state out does not weaken it.

A row stored with ``approval: required`` and disabled, imported from a bundle
whose row for it gives no ``approval``, ``approval_default`` nor
``is_active``, keeps what is stored (as it keeps its ``position``); a field
left out of a row stored already keeps its stored value, while a new row takes
the defaults. A change of those fields the bundle does make is named in the
report of the import and of its dry run (CLI and admin API), so that a tool
that runs without asking is never made so silently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chatwright.plugins.example import assistant as example
from chatwright.registry import Plugins
from tests.harness import ok
from tests.hostile.conftest import AGENT, MakeServer, bearer
from tests.test_bundles import db as db
from tests.test_bundles import keyed as keyed
from tests.test_bundles import stored_tools

ADMIN = bearer("root", app_metadata={"role": "chatwright_admin"})
SAFETY = ("approval", "approval_default", "is_active")


def guarded(tool_id: int) -> None:
    ok("tools", "set", str(tool_id), "--approval", "user", "--approval-default", "auto")
    ok("tools", "set", str(tool_id), "--approval", "required", "--inactive")


def exported() -> dict[str, Any]:
    bundle: dict[str, Any] = json.loads(ok("agents", "export", AGENT).stdout)
    return bundle


def import_json(path: Path, bundle: dict[str, Any], *args: str) -> dict[str, Any]:
    path.write_text(json.dumps(bundle), encoding="utf-8")
    report: dict[str, Any] = json.loads(ok("agents", "import", str(path), "--json", *args).stdout)
    return report


def test_fields_a_bundle_leaves_out_keep_the_stored_ones(db: str, workdir: Path) -> None:
    first = stored_tools(db)[0]
    ok("tools", "set", str(first.id), "--approval-default", "auto")
    guarded(first.id)
    bundle = exported()
    row = bundle["tools"][0]
    for key in (*SAFETY, "type", "config", "position"):
        del row[key]
    row["description"] = "Changed."
    report = import_json(workdir / "b.json", bundle)
    assert report["tools"]["updated"] == [first.name]  # no safety field changes
    (after,) = [t for t in stored_tools(db) if t.name == first.name]
    assert (after.approval, after.approval_default, after.is_active) == ("required", "auto", False)
    assert (after.type, after.config, after.position) == (first.type, first.config, first.position)
    assert after.description == "Changed."

    # A new row leaving them out takes the defaults.
    bundle["tools"] = [{**exported()["tools"][1], "name": "fresh"}]
    for key in SAFETY:
        del bundle["tools"][0][key]
    assert import_json(workdir / "c.json", bundle)["tools"]["added"] == ["fresh"]
    (fresh,) = [t for t in stored_tools(db) if t.name == "fresh"]
    assert (fresh.approval, fresh.approval_default, fresh.is_active) == ("auto", "required", True)


def test_a_change_of_write_safety_is_named_in_the_report(db: str, workdir: Path) -> None:
    first = stored_tools(db)[0]
    guarded(first.id)
    bundle = exported()
    bundle["tools"][0].update(approval="auto", approval_default="required", is_active=True)
    path = workdir / "b.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    named = (
        f"{first.name} (approval required -> auto; approval_default auto -> required; "
        "is_active false -> true)"
    )
    dry = json.loads(ok("agents", "import", str(path), "--dry-run", "--json").stdout)
    assert dry["tools"]["updated"] == [first.name]
    assert dry["tools"]["safety"] == {
        first.name: [
            "approval required -> auto",
            "approval_default auto -> required",
            "is_active false -> true",
        ]
    }
    assert f"tools updated: {named}" in ok("agents", "import", str(path), "--dry-run").stdout
    assert f"tools updated: {named}" in ok("agents", "import", str(path)).stdout
    (after,) = [t for t in stored_tools(db) if t.name == first.name]
    assert (after.approval, after.is_active) == ("auto", True)


async def test_the_admin_api_keeps_and_names_them_too(make_server: MakeServer) -> None:
    server = await make_server()
    await example.seed(server.runtime.storage, "offline:assistant")
    storage = server.runtime.storage
    first = (await storage.tools.list(AGENT))[0]
    await storage.tools.update(first.id, approval="required", is_active=False)
    got = await server.client.get(f"/api/agents/{AGENT}/export", headers=ADMIN)
    assert got.status_code == 200, got.text
    bundle = got.json()
    for key in SAFETY:
        del bundle["tools"][0][key]
    bundle["tools"][0]["description"] = "Changed."
    body = {"bundle": bundle}
    response = await server.client.post("/api/agents/import", json=body, headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json()["tools"]["updated"] == [first.name]
    assert response.json()["tools"]["safety"] == {}
    after = await storage.tools.get(first.id)
    assert after is not None and (after.approval, after.is_active) == ("required", False)

    bundle["tools"][0].update(approval="auto", is_active=True)
    body = {"bundle": bundle, "dry_run": True}
    response = await server.client.post("/api/agents/import", json=body, headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json()["tools"]["updated"] == [first.name]
    assert response.json()["tools"]["safety"] == {
        first.name: ["approval required -> auto", "is_active false -> true"]
    }


def test_a_row_replaced_by_another_type_keeps_them_too(
    db: str, workdir: Path, keyed: Plugins
) -> None:
    first = stored_tools(db)[0]
    guarded(first.id)
    bundle = exported()
    replacing = {"name": first.name, "type": "keyed", "config": {"endpoint": "e", "token": "t"}}
    bundle["tools"] = [replacing]
    path = workdir / "b.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    out = ok("agents", "import", str(path), "--json", plugins=keyed).stdout
    assert json.loads(out)["tools"]["updated"] == [first.name]
    (after,) = [t for t in stored_tools(db) if t.name == first.name]
    assert after.type == "keyed" and after.position == first.position
    assert (after.approval, after.approval_default, after.is_active) == ("required", "auto", False)
