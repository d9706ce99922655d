"""``chatwright usage`` and ``chatwright budgets``: token usage and per-user budgets.

These are the operator's view: ``usage`` shows every user's turns unless
``--user`` narrows it (a user sees their own through ``GET /api/usage``), and
``budgets`` reads and changes the per-user overrides of the ``budgets``
settings. Every value is checked before the database is opened, so a bad one
is one ``Error:`` line naming the option.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from chatwright import hookimpl
from chatwright.cli import AppContext, pass_app
from chatwright.commands import inputs
from chatwright.commands.output import echo_json, echo_table
from chatwright.errors import StorageError
from chatwright.usage import MAX_TOKENS

if TYPE_CHECKING:
    from chatwright.runtime import Runtime
    from chatwright.usage import BudgetState, TurnUsage, UsageLine, UsageStore, UserBudget


def _store(runtime: Runtime) -> UsageStore:
    store: UsageStore | None = getattr(runtime.storage, "usage", None)
    if store is None:
        raise StorageError(
            f"the storage backend {runtime.settings.storage.backend!r} keeps no token usage"
        )
    return store


def _tokens(value: int) -> str:
    return f"{value:,}"


def _cost(value: float | None) -> str:
    """A cost to at least 4 decimals and as many more of its 8 as it needs (a cost of
    a few tokens is not shown as 0.0000)."""
    if value is None:
        return "-"
    whole, decimals = f"{value:.8f}".split(".")
    return f"{whole}.{decimals.rstrip('0').ljust(4, '0')}"


def usage_line(usage: TurnUsage | None, currency: str) -> str:
    """One turn's usage in a line, as ``chatwright chat --usage`` prints it."""
    if usage is None or not usage.model_calls:
        return "usage: no model call"
    calls = f"{usage.model_calls} model call{'' if usage.model_calls == 1 else 's'}"
    cost = "" if usage.cost is None else f", cost {_cost(usage.cost)} {currency}"
    return (
        f"usage: {_tokens(usage.total)} tokens ({_tokens(usage.input_tokens)} in, "
        f"{_tokens(usage.cached_tokens)} of them cached, {_tokens(usage.output_tokens)} out), "
        f"{calls}{cost}"
    )


# -- usage ------------------------------------------------------------------------------


def _line(line: UsageLine) -> dict[str, Any]:
    return {
        "day": line.day.isoformat(),
        "user_id": line.user_id,
        "agent_name": line.agent_name,
        "model": line.model,
        "turns": line.turns,
        "model_calls": line.model_calls,
        "input_tokens": line.input_tokens,
        "output_tokens": line.output_tokens,
        "cached_tokens": line.cached_tokens,
        "total_tokens": line.total,
        "cost": line.cost,
    }


def _totals(lines: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("turns", "model_calls", "input_tokens", "output_tokens", "cached_tokens")
    totals: dict[str, Any] = {key: sum(line[key] for line in lines) for key in keys}
    totals["total_tokens"] = totals["input_tokens"] + totals["output_tokens"]
    costs = [line["cost"] for line in lines if line["cost"] is not None]
    totals["cost"] = round(sum(costs), 8) if costs else None
    return totals


@click.command()
@click.option("--user", help="Only this user's turns (default: every user's).")
@click.option("--agent", type=inputs.AGENT, help="Only turns with this agent.")
@click.option(
    "--since",
    metavar="DATE",
    help="From this UTC date or ISO 8601 time on (2026-11-01, 2026-11-01T08:00:00Z).",
)
@click.option("--until", metavar="DATE", help="Up to this date (included) or time (excluded).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def usage(
    app: AppContext,
    user: str | None,
    agent: str | None,
    since: str | None,
    until: str | None,
    as_json: bool,
) -> None:
    """Tokens spent per UTC day, user, agent and model, with totals and costs.

    Costs come from the usage.prices setting, in usage.currency, for the models it prices.
    """
    from chatwright.usage import bound, check_range

    if user is not None:
        inputs.name("--user", user)
    start = bound("--since", since) if since is not None else None
    end = bound("--until", until, end=True) if until is not None else None
    check_range(start, end, "--since and --until")

    async def work(runtime: Runtime) -> list[UsageLine]:
        return await _store(runtime).lines(user, since=start, until=end, agent_name=agent)

    lines = [_line(line) for line in app.run(work)]
    currency = app.settings.usage.currency
    totals = _totals(lines)
    if as_json:
        echo_json({"currency": currency, "lines": lines, "totals": totals})
        return
    if not lines:
        click.echo(
            "No usage recorded"
            + (" for these options." if user or agent or since or until else ".")
        )
        return
    headers = (
        "day",
        "user",
        "agent",
        "model",
        "turns",
        "calls",
        "input",
        "output",
        "cached",
        "total",
        f"cost ({currency})",
    )

    def cells(row: dict[str, Any], *first: str) -> list[str]:
        return [
            *first,
            _tokens(row["turns"]),
            _tokens(row["model_calls"]),
            _tokens(row["input_tokens"]),
            _tokens(row["output_tokens"]),
            _tokens(row["cached_tokens"]),
            _tokens(row["total_tokens"]),
            _cost(row["cost"]),
        ]

    rows = [cells(r, r["day"], r["user_id"], r["agent_name"], r["model"]) for r in lines]
    rows.append(cells(totals, "total", "", "", ""))
    echo_table(headers, rows)


# -- budgets ----------------------------------------------------------------------------


DEFAULT = "default"


class Limit(click.ParamType[int | str]):
    """A budget in tokens, ``default`` (follow the setting) or ``unlimited`` (-1)."""

    name = "N|default|unlimited"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> int | str:
        from chatwright.usage import UNLIMITED

        if isinstance(value, int):
            return value
        text = str(value).strip().lower()
        if text == DEFAULT:
            return DEFAULT
        if text == "unlimited":
            return UNLIMITED
        try:
            tokens = int(text.replace("_", "").replace(",", ""))
        except ValueError:
            self.fail(
                f"{str(value)[:40]!r} is not a number of tokens; give one such as 100000, "
                "or default (follow the budgets setting) or unlimited",
                param,
                ctx,
            )
        if tokens < 0:
            self.fail(f"{tokens} is negative; give 0 or more tokens, or unlimited", param, ctx)
        if tokens > MAX_TOKENS:
            self.fail(f"{text[:40]} is too large; give at most {MAX_TOKENS:,} tokens", param, ctx)
        return tokens


def _limit(value: int | None) -> str:
    if value is None:
        return "default"
    return "unlimited" if value < 0 else _tokens(value)


def _override(budget: UserBudget) -> dict[str, Any]:
    return {
        "user_id": budget.user_id,
        "daily_tokens": budget.daily_tokens,
        "monthly_tokens": budget.monthly_tokens,
        "updated_at": budget.updated_at.isoformat(),
    }


def _state(state: BudgetState) -> dict[str, Any]:
    return {
        "period": state.period,
        "limit": state.limit,
        "used": state.used,
        "remaining": state.remaining,
        "resets_at": state.resets_at.isoformat(),
    }


@click.group()
def budgets() -> None:
    """Per-user token budgets: list, show, set and clear overrides of the budgets settings.

    A user without an override has the budgets.daily_tokens and budgets.monthly_tokens
    settings; an override replaces either or both (unlimited lifts it for that user).
    """


@budgets.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def budgets_list(app: AppContext, as_json: bool) -> None:
    """The settings' budgets and every user's override."""

    async def work(runtime: Runtime) -> list[UserBudget]:
        return await _store(runtime).budgets()

    overrides = [_override(b) for b in app.run(work)]
    settings = app.settings.budgets
    if as_json:
        echo_json(
            {
                "settings": {
                    "daily_tokens": settings.daily_tokens,
                    "monthly_tokens": settings.monthly_tokens,
                },
                "overrides": overrides,
            }
        )
        return
    daily = "unlimited" if settings.daily_tokens is None else _tokens(settings.daily_tokens)
    monthly = "unlimited" if settings.monthly_tokens is None else _tokens(settings.monthly_tokens)
    click.echo(f"Settings: daily {daily}, monthly {monthly} tokens per user.")
    if not overrides:
        click.echo("No user has an override.")
        return
    echo_table(
        ("user", "daily", "monthly", "updated"),
        [
            (
                o["user_id"],
                _limit(o["daily_tokens"]),
                _limit(o["monthly_tokens"]),
                o["updated_at"][:19],
            )
            for o in overrides
        ],
    )


@budgets.command("show")
@click.argument("user")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def budgets_show(app: AppContext, user: str, as_json: bool) -> None:
    """A user's budgets now: limit, used, remaining and when each resets."""
    inputs.name("USER", user)

    async def work(runtime: Runtime) -> tuple[UserBudget | None, list[BudgetState]]:
        from chatwright.usage import budget_states

        store = _store(runtime)
        states = await budget_states(store, runtime.settings, user, datetime.now(UTC))
        return await store.budget(user), states

    override, states = app.run(work)
    if as_json:
        echo_json(
            {
                "user_id": user,
                "override": _override(override) if override else None,
                "budgets": [_state(s) for s in states],
            }
        )
        return
    source = "an override" if override else "the settings"
    click.echo(f"User {user!r} ({source}):")
    echo_table(
        ("period", "limit", "used", "remaining", "resets"),
        [
            (
                s.period,
                "unlimited" if s.limit is None else _tokens(s.limit),
                _tokens(s.used),
                "-" if s.remaining is None else _tokens(s.remaining),
                s.resets_at.isoformat(timespec="seconds"),
            )
            for s in states
        ],
    )


@budgets.command("set")
@click.argument("user")
@click.option("--daily", type=Limit(), help="Tokens per UTC day.")
@click.option("--monthly", type=Limit(), help="Tokens per calendar month.")
@pass_app
def budgets_set(
    app: AppContext, user: str, daily: int | str | None, monthly: int | str | None
) -> None:
    """Override a user's budgets: a number of tokens, default (the setting) or unlimited.

    A period not given keeps what the user has.
    """
    inputs.name("USER", user)
    if daily is None and monthly is None:
        raise click.UsageError("nothing to change: give --daily, --monthly or both")

    def chosen(given: int | str | None, kept: int | None) -> int | None:
        if given is None:
            return kept
        return None if given == DEFAULT else int(given)

    async def work(runtime: Runtime) -> UserBudget:
        store = _store(runtime)
        before = await store.budget(user)
        return await store.set_budget(
            user,
            daily_tokens=chosen(daily, before.daily_tokens if before else None),
            monthly_tokens=chosen(monthly, before.monthly_tokens if before else None),
        )

    budget = app.run(work)
    click.echo(
        f"User {budget.user_id!r}: daily {_limit(budget.daily_tokens)}, "
        f"monthly {_limit(budget.monthly_tokens)}."
    )


@budgets.command("clear")
@click.argument("user")
@pass_app
def budgets_clear(app: AppContext, user: str) -> None:
    """Remove a user's override: the budgets settings apply to them again."""
    inputs.name("USER", user)

    async def work(runtime: Runtime) -> bool:
        return await _store(runtime).clear_budget(user)

    if app.run(work):
        click.echo(f"User {user!r} follows the budgets settings again.")
    else:
        click.echo(f"User {user!r} had no override; nothing changed.")


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(usage)
    cli.add_command(budgets)
