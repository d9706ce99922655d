"""Finding, loading and asking plugins.

A plugin is any object or module with functions marked ``@hookimpl`` whose
names match the specs in :mod:`chatwright.hookspecs`. Installed plugins are
found through entry points of group ``chatwright``; the bundled ones (the SQL
storage, the CRUD tool, …) are entry points of the ``chatwright`` distribution
itself, so they are listed, and can be blocked, exactly like third-party ones.

Which plugins are loaded is a :class:`~chatwright.load_policy.LoadPolicy`,
read from ``CHATWRIGHT_LOAD_PLUGINS``, ``CHATWRIGHT_DISABLE_PLUGINS`` and
``CHATWRIGHT_STRICT_PLUGINS`` before anything is imported (see
:mod:`chatwright.load_policy`).

``CHATWRIGHT_TRACE_PLUGINS=1`` writes one line to stderr for every call of a
plugin's hook: the plugin, the hook with a summary of its arguments, how long
it took, and what it registered, added or raised.

Collection hooks are called one implementation at a time, so that the core
knows which plugin registered which name, can name both plugins when a name is
taken twice, and can isolate a plugin whose hook raises.

Longer than 450 lines because every way the core asks plugins (collections,
commands, events, vetoes) shares the isolation and tracing here.
"""

from __future__ import annotations

import difflib
import functools
import logging
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from chatwright import hookspecs
from chatwright.errors import DuplicateRegistrationError, PluginError, UnknownNameError, one_line

# Re-exported: they lived here first, and callers import them from this module.
from chatwright.load_policy import LoadPolicy as LoadPolicy
from chatwright.load_policy import env_flag as env_flag
from chatwright.load_policy import normalize_name as normalize_name

log = logging.getLogger(__name__)

SLOW_IMPORT = 1.0
"""Seconds past which a plugin's import is warned of (every command waits for it)."""

ENTRY_POINT_GROUP = "chatwright"
BUNDLED_DISTRIBUTION = "chatwright"

# What each collection hook registers, for messages ("no storage backend named …").
COLLECTIONS: dict[str, str] = {
    "register_storage_backends": "storage backend",
    "register_session_stores": "session store",
    "register_tool_types": "tool type",
    "register_eviction_policies": "eviction policy",
    "register_models": "model provider",
    "register_examples": "example",
    "register_settings": "settings section",
}
SECTION_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass
class PluginInfo:
    """What ``chatwright plugins`` reports about one plugin."""

    name: str
    version: str | None
    hooks: list[str]
    bundled: bool
    error: str | None = None
    distribution: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "hooks": self.hooks,
            "bundled": self.bundled,
            "error": self.error,
        }


@dataclass(frozen=True)
class Registration:
    """One name registered through a collection hook, and who registered it."""

    kind: str
    name: str
    value: Any
    plugin: str


def _new_commands(cli: Any, before: Mapping[str, Any]) -> list[str]:
    return [name for name in cli.commands if name not in before]


def _command_tree(
    group: Any, path: str = "", seen: set[int] | None = None
) -> dict[str, tuple[Any, dict[str, Any]]]:
    """Every group under ``group`` (itself included) by its words after ``chatwright``,
    with a copy of its commands, so that a change to any of them can be seen and undone.
    A group met again (one added inside itself) is walked once."""
    commands = getattr(group, "commands", None)
    seen = set() if seen is None else seen
    if not isinstance(commands, dict) or id(group) in seen:
        return {}
    seen.add(id(group))
    tree = {path: (group, dict(commands))}
    for name, command in commands.items():
        tree.update(_command_tree(command, f"{path} {name}".strip(), seen))
    return tree


def _restore(tree: Mapping[str, tuple[Any, dict[str, Any]]]) -> None:
    for group, commands in tree.values():
        group.commands.clear()
        group.commands.update(commands)


def _check_model_factory(name: str, value: Any) -> None:
    if not callable(value):
        raise PluginError(
            f"model provider {name!r} must be registered with a factory, a function "
            f"(name, settings) -> chat model; got {_summary(value)}"
        )


def _check_tool_type(name: str, value: Any) -> None:
    """Refuse what is not a :class:`chatwright.tools.ToolType`, without touching a
    ``config_model`` property (a lazy type imports its model there)."""
    import inspect

    what = f"tool type {name!r} must be registered with an instance of a tool type"
    if isinstance(value, type):
        raise PluginError(
            f"{what}, got the class {value.__name__}: register {value.__name__}() instead"
        )
    missing = [a for a in ("config_model", "build") if not hasattr(type(value), a)]
    missing = [a for a in missing if a not in getattr(value, "__dict__", {})]
    if missing:
        raise PluginError(
            f"{what} (an object with config_model and an async build); "
            f"got {_summary(value)}, which has no {' or '.join(missing)}"
        )
    build = value.build
    if not (
        inspect.iscoroutinefunction(inspect.unwrap(build))
        or inspect.iscoroutinefunction(getattr(build, "__call__", None))  # noqa: B004
    ):
        raise PluginError(
            f"{what}: its build must be a coroutine function (async def build(self, row, "
            f"config, context)); {type(value).__name__}.build is not"
        )
    model = inspect.getattr_static(value, "config_model")
    if not isinstance(model, type) and hasattr(type(model), "__get__"):
        return  # a property or other descriptor: read when a row is validated
    from pydantic import BaseModel

    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise PluginError(
            f"{what}: its config_model must be a pydantic model class, got {_summary(model)}"
        )


def _check_defaults(section: str, model: Any) -> None:
    """Refuse a settings model whose defaults cannot be made, as docs/plugins.md asks of
    every key: a settings load makes them whenever the section is not given (as on a
    fresh machine), and then every command would fail, not only the plugin's."""
    required = [name for name, field in model.model_fields.items() if field.is_required()]
    if required:
        keys = ", ".join(f"{section}.{name}" for name in required)
        raise PluginError(
            f"the settings model {model.__name__} of section {section!r} has no default "
            f"for {keys}; every key of a plugin's settings needs a default"
        )
    try:
        model()
    except Exception as exc:  # a default_factory that raises, a default that is invalid
        raise PluginError(
            f"the default settings of section {section!r} cannot be made "
            f"({model.__name__}() failed: {one_line(exc)})"
        ) from exc


# What each collection hook accepts as a registered value, beyond a name.
VALUE_CHECKS: dict[str, Callable[[str, Any], None]] = {
    "register_models": _check_model_factory,
    "register_tool_types": _check_tool_type,
}


def _summary(value: Any) -> str:
    """A short, one-line picture of a hook argument for the trace."""
    if value is None or isinstance(value, str | int | float | bool | tuple):
        text = repr(value)
        return text if len(text) <= 60 else text[:59] + "…"
    return f"<{type(value).__name__}>"


def _meant(name: str, candidates: Iterable[str] | Mapping[str, str]) -> str:
    """`` (did you mean 'x'?)`` for the candidate closest to ``name`` (as a mapping gives
    it to be shown), or ""."""
    close = difflib.get_close_matches(name, sorted(candidates), n=1)
    if not close:
        return ""
    shown = candidates[close[0]] if isinstance(candidates, Mapping) else close[0]
    return f" (did you mean {shown!r}?)"


def policy_problems(policy: LoadPolicy, found: Mapping[str, str]) -> list[str]:
    """The names of the load policy that match nothing installed, each with what it
    may have meant: a misspelt name would otherwise block, or admit, nothing silently.

    :param found: every plugin (entry point) name found, normalized, with its
        distribution.
    """
    plugins = set(found)
    distributions = {normalize_name(d): d for d in found.values() if d}
    # Never offered as what was meant: blocking chatwright itself blocks every bundled
    # plugin, and most plugins' distributions are named "chatwright-…".
    offered = (plugins | set(distributions)) - {BUNDLED_DISTRIBUTION}
    problems = []
    for name in sorted(policy.block - plugins - set(distributions)):
        meant = _meant(name, offered)
        problems.append(
            f"CHATWRIGHT_DISABLE_PLUGINS names {name!r}, which matches no installed plugin "
            f"or plugin's distribution, so it blocks nothing{meant}; `chatwright plugins "
            "--all` lists them"
        )
    for name in sorted((policy.allow or frozenset()) - set(distributions)):
        if name in plugins and normalize_name(found[name]) == BUNDLED_DISTRIBUTION:
            problems.append(
                f"CHATWRIGHT_LOAD_PLUGINS names {name!r}, a plugin bundled with chatwright: "
                "bundled plugins always load, and the list admits other distributions"
            )
            continue
        if name in plugins:
            meant = f": it is a plugin of distribution {found[name]!r}, give that"
        else:
            others = {d: shown for d, shown in distributions.items() if d != BUNDLED_DISTRIBUTION}
            meant = _meant(name, others)
        problems.append(
            f"CHATWRIGHT_LOAD_PLUGINS names {name!r}, which matches no installed "
            f"distribution of chatwright plugins, so it loads nothing{meant}; it takes "
            "distribution names, as `pip list` gives them"
        )
    return problems


class Plugins:
    """The plugin manager of one process: pluggy underneath, plus bookkeeping.

    :param trace: write a line to stderr for every hook call; by default
        ``CHATWRIGHT_TRACE_PLUGINS`` decides.
    """

    def __init__(self, policy: LoadPolicy | None = None, *, trace: bool | None = None) -> None:
        self.policy = policy if policy is not None else LoadPolicy.from_environ()
        self.trace = env_flag("CHATWRIGHT_TRACE_PLUGINS") if trace is None else trace
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._infos: dict[str, PluginInfo] = {}
        self._collected: dict[str, dict[str, Registration]] = {}
        self._builtin: frozenset[str] = frozenset()
        self._warned: set[tuple[str, str]] = set()  # (plugin, hook) warned of a return value
        self._clashes: dict[str, dict[str, str]] = {}  # hook -> name two plugins register -> why
        self._register_builtin()

    def _register_builtin(self) -> None:
        """Register the core's own command modules, first, so nothing can displace them."""
        from chatwright.commands import builtin_plugins  # imports click, nothing heavy

        modules = builtin_plugins()
        for name, module in modules.items():
            self._pm.register(module, name=name)
        self._builtin = frozenset(modules)

    @classmethod
    def load(cls, policy: LoadPolicy | None = None) -> Plugins:
        """A manager with every admitted entry-point plugin loaded."""
        plugins = cls(policy)
        plugins.load_entry_points()
        return plugins

    # -- loading ---------------------------------------------------------

    def load_entry_points(self) -> None:
        # Each of a distribution's entry points would parse its metadata twice again.
        described: dict[int, tuple[str, str | None]] = {}
        found: dict[str, str] = {}  # every plugin name found, normalized: its distribution
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.dist is None:
                distribution, version = "", None
            else:
                if id(ep.dist) not in described:
                    meta = ep.dist.metadata
                    described[id(ep.dist)] = (meta["Name"], meta["Version"])
                distribution, version = described[id(ep.dist)]
            found[normalize_name(ep.name)] = distribution
            bundled = normalize_name(distribution) == BUNDLED_DISTRIBUTION
            if not self.policy.admits(ep.name, distribution, bundled):
                continue
            if ep.name in self._infos:
                taken_by = self._infos[ep.name].distribution
                clash = PluginInfo(
                    f"{ep.name} ({distribution})", version, [], bundled, distribution=distribution
                )
                self._infos[clash.name] = clash
                self._fail(
                    clash,
                    f"not loaded: the plugin name {ep.name!r} is already taken by "
                    f"distribution {taken_by!r}",
                    None,
                )
                continue
            info = PluginInfo(ep.name, version, [], bundled, distribution=distribution)
            self._infos[ep.name] = info
            start = time.perf_counter()
            try:
                obj = ep.load()
            except Exception as exc:  # any import-time failure is the plugin's fault
                self._fail(info, f"failed to import {ep.value}: {one_line(exc)}", exc)
                continue
            self._imported(info, ep.value, time.perf_counter() - start)
            self._register(obj, info)
        self._pm.check_pending()
        # A warning even when strict: a block left after its plugin was uninstalled
        # must not stop every command.
        for problem in policy_problems(self.policy, found):
            log.warning("chatwright: %s", problem)

    def _imported(self, info: PluginInfo, module: str, seconds: float) -> None:
        """Trace a plugin's import, and warn of one slow enough to slow every command
        (each one imports every plugin first)."""
        if self.trace:
            sys.stderr.write(
                f"chatwright trace: plugin {info.name!r} imported {module} in "
                f"{seconds * 1000:.3f} ms\n"
            )
            sys.stderr.flush()
        if seconds >= SLOW_IMPORT and not info.bundled:
            log.warning(
                "chatwright: plugin %r (%s) took %.1f s to import, which every command waits "
                "for; its import should leave heavy work to its factories (or block it with "
                "CHATWRIGHT_DISABLE_PLUGINS)",
                info.name,
                info.distribution or module,
                seconds,
            )

    def register(self, plugin: object, name: str, *, version: str | None = None) -> None:
        """Register a plugin object directly (tests, embedding applications)."""
        if name in self._infos:
            raise PluginError(f"a plugin named {name!r} is already registered")
        info = PluginInfo(name, version, [], bundled=False)
        self._infos[name] = info
        self._register(plugin, info)
        if info.error is not None:
            raise PluginError(f"plugin {name!r}: {info.error}")

    def unregister(self, name: str) -> None:
        self._infos.pop(name, None)
        if self._pm.get_plugin(name) is not None:
            self._pm.unregister(name=name)
        self._collected.clear()

    def _register(self, obj: object, info: PluginInfo) -> None:
        try:
            self._pm.register(obj, name=info.name)
        except Exception as exc:  # pluggy validation: wrong argument names and the like
            self._fail(info, f"failed to register: {one_line(exc)}", exc)
            return
        unknown = [c.name for c in self._pm.get_hookcallers(obj) or [] if c.spec is None]
        if unknown:
            hints = []
            for name in unknown:
                close = difflib.get_close_matches(name, self.hook_names(), n=1)
                hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            self._pm.unregister(obj)
            self._fail(info, "implements unknown hook " + ", ".join(hints), None)
            return
        info.hooks = sorted(c.name for c in self._pm.get_hookcallers(obj) or [])
        self._collected.clear()

    def _fail(self, info: PluginInfo, message: str, exc: BaseException | None) -> None:
        info.error = message
        if self._pm.get_plugin(info.name) is not None:
            self._pm.unregister(name=info.name)
        self._collected.clear()
        if self.policy.strict:
            raise PluginError(f"plugin {info.name!r} {message}") from exc
        log.warning(
            "chatwright: skipped plugin %r: %s (see `chatwright plugins`)", info.name, message
        )

    # -- asking ----------------------------------------------------------

    @staticmethod
    def hook_names() -> list[str]:
        return sorted(
            name
            for name in dir(hookspecs)
            if hasattr(getattr(hookspecs, name), f"{hookspecs.PROJECT_NAME}_spec")
        )

    def infos(self, *, include_bundled: bool = True) -> list[PluginInfo]:
        return sorted(
            (i for i in self._infos.values() if include_bundled or not i.bundled),
            key=lambda i: (not i.bundled, i.name),
        )

    def not_loaded(self, adds: str) -> str:
        """Why something a plugin ``adds`` (settings, commands) may be missing: plugins
        installed but blocked, not admitted or failed; empty when there are none."""
        reasons = []
        if self.policy.block:
            reasons.append(
                "CHATWRIGHT_DISABLE_PLUGINS blocks " + ", ".join(sorted(self.policy.block))
            )
        if self.policy.allow is not None:
            allowed = ", ".join(sorted(self.policy.allow)) or "none"
            reasons.append(f"CHATWRIGHT_LOAD_PLUGINS admits only the bundled plugins and {allowed}")
        failed = [info.name for info in self.infos() if info.error]
        if failed:
            reasons.append("failed to load (see `chatwright plugins`): " + ", ".join(failed))
        if not reasons:
            return ""
        return f" (a plugin that is not loaded adds no {adds}: " + "; ".join(reasons) + ")"

    def _impls(self, hook_name: str, **kwargs: Any) -> Iterator[tuple[str, Callable[[], Any]]]:
        """Each implementation of a hook, bound to the arguments it asks for."""
        caller = getattr(self._pm.hook, hook_name)
        for impl in caller.get_hookimpls():
            args = {name: kwargs[name] for name in impl.argnames}
            yield impl.plugin_name, functools.partial(impl.function, **args)

    def _call(
        self,
        plugin_name: str,
        hook_name: str,
        function: Callable[[], object],
        kwargs: Mapping[str, Any],
        outcome: tuple[str, Callable[[], Iterable[str]]] | None = None,
    ) -> None:
        """Call one plugin's implementation of a hook, traced when tracing is on.

        :param outcome: for the trace, a verb and the names the call produced
            (``("registered", …)``).
        """
        if not self.trace:
            function()
            return
        # pluggy's add_hookcall_monitoring sees only calls made through pm.hook; the
        # registry calls each implementation itself, so it times them itself too.
        start = time.perf_counter()
        try:
            function()
        except BaseException as exc:
            self._trace(plugin_name, hook_name, kwargs, start, f"raised {one_line(exc)}")
            raise
        result = ""
        if outcome is not None:
            verb, names = outcome
            result = f"{verb} " + (", ".join(repr(n) for n in names()) or "nothing")
        self._trace(plugin_name, hook_name, kwargs, start, result)

    @staticmethod
    def _trace(
        plugin_name: str, hook_name: str, kwargs: Mapping[str, Any], start: float, result: str
    ) -> None:
        elapsed = (time.perf_counter() - start) * 1000
        args = ", ".join(f"{name}={_summary(value)}" for name, value in kwargs.items())
        line = f"chatwright trace: plugin {plugin_name!r} {hook_name}({args}) {elapsed:.3f} ms"
        # One write per line: lines from several server workers on one stderr stay whole.
        sys.stderr.write(line + (f": {result}" if result else "") + "\n")
        sys.stderr.flush()

    def _registrations(
        self, hook_name: str, check: Callable[[Any, Any], None]
    ) -> Iterator[tuple[str, dict[str, Registration]]]:
        """Each plugin's registrations through one collection hook, one plugin at a time.

        ``check(name, value)`` raises for a registration the hook does not accept;
        a plugin whose hook raises (a failed check included) is reported and skipped.
        """
        kind = COLLECTIONS[hook_name]
        for impl in getattr(self._pm.hook, hook_name).get_hookimpls():
            plugin_name = impl.plugin_name
            mine: dict[str, Registration] = {}

            def register(
                name: str, value: Any, _mine: dict[str, Registration] = mine, _by: str = plugin_name
            ) -> None:
                check(name, value)
                if name in _mine:
                    raise DuplicateRegistrationError(
                        f"plugin {_by!r} registers {kind} {name!r} twice"
                    )
                _mine[name] = Registration(kind, name, value, _by)

            returned: list[Any] = []

            def call(
                f: Callable[..., Any] = impl.function,
                args: dict[str, Any] = {"register": register} if impl.argnames else {},
                into: list[Any] = returned,
            ) -> None:
                into.append(f(**args))

            try:
                self._call(
                    plugin_name,
                    hook_name,
                    call,
                    {"register": register},
                    ("registered", mine.keys),
                )
            except Exception as exc:
                self._fail(self._infos[plugin_name], f"{hook_name} failed: {one_line(exc)}", exc)
                continue
            if returned and returned[0] is not None:
                self._warn_returned(plugin_name, hook_name, returned[0])
            yield plugin_name, mine

    def _warn_returned(self, plugin_name: str, hook_name: str, value: Any) -> None:
        """Warn, once per plugin and hook, of a collection hook that returned something:
        what it returns is never read, so what it meant to register is missing."""
        if (plugin_name, hook_name) in self._warned:
            return
        self._warned.add((plugin_name, hook_name))
        log.warning(
            "chatwright: plugin %r: %s returned %s, which is ignored; a collection hook "
            "declares each thing by calling register(name, value) and returns nothing",
            plugin_name,
            hook_name,
            _summary(value),
        )

    def collect(self, hook_name: str) -> dict[str, Registration]:
        """Everything registered through one collection hook, by name."""
        if hook_name in self._collected:
            return self._collected[hook_name]
        kind = COLLECTIONS[hook_name]

        check_value = VALUE_CHECKS.get(hook_name)

        def check(name: Any, value: Any) -> None:
            if not isinstance(name, str) or not name:
                raise PluginError(f"{kind} names must be non-empty strings, got {name!r}")
            if check_value is not None:
                check_value(name, value)

        # Every registration first, then a choice per name, whatever order the plugins
        # were called in: chatwright's own name stays its own (the others' are ignored);
        # a name two other plugins register is neither's, and only what uses it fails.
        by_name: dict[str, list[Registration]] = {}
        for _, mine in self._registrations(hook_name, check):
            for name, reg in mine.items():
                by_name.setdefault(name, []).append(reg)
        found: dict[str, Registration] = {}
        clashes: dict[str, str] = {}
        for name, regs in by_name.items():
            ours = [r for r in regs if self._ours(r.plugin)]
            chosen = ours[0] if ours else regs[0] if len(regs) == 1 else None
            if chosen is not None:
                found[name] = chosen
                for other in (r for r in regs if r is not chosen):
                    log.warning(
                        "chatwright: plugin %r registers the %s %r, which chatwright's "
                        "plugin %r registers; the plugin's is ignored",
                        other.plugin,
                        kind,
                        name,
                        chosen.plugin,
                    )
                continue
            plugins = " and ".join(f"plugin {r.plugin!r}" for r in regs)
            clashes[name] = (
                f"{kind} {name!r} is registered by both {plugins}; disable one of them "
                "with CHATWRIGHT_DISABLE_PLUGINS"
            )
            log.warning("chatwright: %s; neither is used", clashes[name])
        self._collected[hook_name] = found
        self._clashes[hook_name] = clashes
        return found

    def _ours(self, plugin_name: str) -> bool:
        """Whether the plugin is chatwright's own (bundled or built in)."""
        info = self._infos.get(plugin_name)
        return plugin_name in self._builtin or (info is not None and info.bundled)

    def clash(self, hook_name: str, name: str) -> str | None:
        """Why ``name`` is not in :meth:`collect`'s answer when two plugins register it
        (neither is used: only what uses the name fails, with this), else None."""
        self.collect(hook_name)
        return self._clashes.get(hook_name, {}).get(name)

    def collect_settings(self) -> list[Registration]:
        """Every ``register_settings`` call, in plugin order: section name and model.

        Unlike other collections several plugins may register one section (each
        adds its own keys); :mod:`chatwright.settings` checks keys for clashes.
        """
        hook_name = "register_settings"
        if hook_name not in self._collected:
            from pydantic import BaseModel

            def check(section: Any, model: Any) -> None:
                if not isinstance(section, str) or not SECTION_NAME.fullmatch(section):
                    raise PluginError(
                        "settings sections are named in lower case letters, digits and "
                        f"underscores, got {section!r}"
                    )
                if not (isinstance(model, type) and issubclass(model, BaseModel)):
                    raise PluginError(
                        f"the settings of section {section!r} must be a pydantic model "
                        f"class, got {model!r}"
                    )
                _check_defaults(section, model)

            found: dict[str, Registration] = {}
            for plugin_name, mine in self._registrations(hook_name, check):
                found.update({f"{plugin_name}:{s}": reg for s, reg in mine.items()})
            self._collected[hook_name] = found
        return list(self._collected[hook_name].values())

    def get(self, hook_name: str, name: str, *, setting: str | None = None) -> Registration:
        """One registration by name, or an error listing the names that exist."""
        found = self.collect(hook_name)
        if name in found:
            return found[name]
        clash = self.clash(hook_name, name)
        if clash is not None:
            raise DuplicateRegistrationError(clash)
        kind = COLLECTIONS[hook_name]
        known = ", ".join(repr(n) for n in sorted(found)) or "none"
        where = f" (setting {setting})" if setting else ""
        hint = ""
        blocked = sorted(self.policy.block)
        if blocked:
            hint = f"; CHATWRIGHT_DISABLE_PLUGINS blocks {', '.join(blocked)}"
        skipped = [info.name for info in self.infos() if info.error]
        if skipped:
            names = ", ".join(map(repr, skipped))
            were = "plugins {} failed and were" if len(skipped) > 1 else "plugin {} failed and was"
            hint += f"; {were.format(names)} skipped"
        raise UnknownNameError(
            f"no {kind} named {name!r} is available{where}; known: {known}{hint}"
        )

    def add_commands(self, cli: Any) -> None:
        owners: dict[str, str] = {}  # command name -> plugin that added it
        for plugin_name, function in self._impls("register_commands", cli=cli):
            if plugin_name in self._builtin:
                function()  # the core's own commands: a failure here is a bug, not a plugin's
                continue
            tree = _command_tree(cli)
            before = tree[""][1]
            try:
                self._call(
                    plugin_name,
                    "register_commands",
                    function,
                    {"cli": cli},
                    ("added", functools.partial(_new_commands, cli, before)),
                )
            except Exception as exc:
                _restore(tree)
                self._fail(
                    self._infos[plugin_name], f"register_commands failed: {one_line(exc)}", exc
                )
                continue
            # Every command there was, subcommands of groups included, by its words.
            existing = {
                f"{path} {name}".strip(): (group, command)
                for path, (group, commands) in tree.items()
                for name, command in commands.items()
            }
            changed = {
                words: group.commands.get(words.rpartition(" ")[2])
                for words, (group, command) in existing.items()
                if group.commands.get(words.rpartition(" ")[2]) is not command
            }
            if changed:
                # A plugin may add commands, never silently take over or drop an existing one.
                _restore(tree)

                def owner(words: str) -> str:
                    top = words.partition(" ")[0]
                    by = f"from {owners[top]!r}" if top in owners else "built in"
                    return f"{words!r} ({by})"

                replaced = [owner(w) for w in sorted(changed) if changed[w] is not None]
                removed = [owner(w) for w in sorted(changed) if changed[w] is None]
                what = []
                if replaced:
                    what.append(f"tried to replace the command {', '.join(replaced)}")
                if removed:
                    what.append(f"tried to remove the command {', '.join(removed)}")
                self._fail(
                    self._infos[plugin_name], "register_commands " + " and ".join(what), None
                )
                continue
            owners.update({n: plugin_name for n in cli.commands if n not in before})

    def notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call an event hook on every plugin; one plugin's failure is only logged."""
        for plugin_name, function in self._impls(hook_name, **kwargs):
            try:
                self._call(plugin_name, hook_name, function, kwargs)
            except Exception:
                if self.policy.strict:
                    raise
                log.exception("chatwright: plugin %r failed in %s", plugin_name, hook_name)

    def veto(self, hook_name: str, **kwargs: Any) -> str | None:
        """Call a veto hook (``before_write``) on every plugin; the first reason given wins.

        Unlike an event hook, a plugin that raises here vetoes, with its error as
        the reason: a policy that cannot decide must not let a write through.
        """
        for plugin_name, function in self._impls(hook_name, **kwargs):
            answers: list[Any] = []

            def ask(f: Callable[[], Any] = function, into: list[Any] = answers) -> None:
                into.append(f())

            try:
                self._call(plugin_name, hook_name, ask, kwargs)
            except Exception as exc:
                log.exception("chatwright: plugin %r failed in %s", plugin_name, hook_name)
                return f"the check of plugin {plugin_name!r} failed ({one_line(exc)})"
            if answers and answers[0]:
                return str(answers[0])
        return None

    def implemented(self, hook_name: str) -> bool:
        """Whether any loaded plugin implements the hook (pluggy knows; nothing is called).

        For a caller that would do work only to build a hook's arguments: the
        sweeper fetches deactivated sessions' rows only when some plugin
        implements ``session_deactivated``.
        """
        return bool(getattr(self._pm.hook, hook_name).get_hookimpls())
