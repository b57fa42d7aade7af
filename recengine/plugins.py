"""Finding plugins and collecting what they register.

Every plugin, first-party or third-party, is a module named by an entry point in the
``recengine`` group. ``RECENGINE_DISABLE_PLUGINS=a,b`` switches plugins off by entry-point
name. A plugin that fails to import or raises during registration is reported with its
name and left out, so one broken package never takes the CLI down.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import pluggy
from pydantic import BaseModel, ConfigDict

from recengine import hookspecs
from recengine.errors import UserError

# kind -> hook name. The kinds are the recipe's plugin sections.
HOOKS = {
    "dataset": "register_datasets",
    "model": "register_models",
    "adapter": "register_adapters",
    "precision": "register_precisions",
    "compiler": "register_compilers",
    "profiler": "register_profilers",
    "monitor": "register_monitors",
}


class NoOptions(BaseModel):
    """Options model for factories that take none."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Entry:
    """One named factory registered by a plugin."""

    kind: str
    name: str
    factory: Callable[..., Any]
    options: type[BaseModel]
    plugin: str
    distribution: str

    def build(self, options: BaseModel | dict | None = None, **runtime: Any) -> Any:
        if not isinstance(options, BaseModel):
            options = self.options.model_validate(options or {})
        return self.factory(options, **runtime)


@dataclass
class Registry:
    """Named factories by kind, plus the plugins that were found or left out."""

    entries: dict[str, dict[str, Entry]] = field(default_factory=lambda: {k: {} for k in HOOKS})
    plugins: dict[str, str] = field(default_factory=dict)  # plugin name -> distribution
    broken: dict[str, str] = field(default_factory=dict)  # plugin name -> error

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def get(self, kind: str, name: str) -> Entry:
        try:
            return self.entries[kind][name]
        except KeyError:
            raise UserError(unknown_name_message(kind, name, self.names(kind))) from None


def unknown_name_message(kind: str, name: str, available: list[str]) -> str:
    close = difflib.get_close_matches(name, available, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"unknown {kind} '{name}'. Available: {', '.join(available) or '(none)'}.{hint}"


def _disabled() -> set[str]:
    return {p.strip() for p in os.environ.get("RECENGINE_DISABLE_PLUGINS", "").split(",") if p.strip()}


def _entry_point_plugins(disabled: set[str], broken: dict[str, str]) -> Iterable[tuple[str, str, object]]:
    for ep in importlib.metadata.entry_points(group=hookspecs.PROJECT):
        if ep.name in disabled:
            continue
        dist = ep.dist.name if ep.dist is not None else "?"
        try:
            yield ep.name, dist, ep.load()
        except Exception as exc:  # a broken third-party package must not break the CLI
            broken[ep.name] = f"{type(exc).__name__}: {exc}"


def load_registry(extra_plugins: Iterable[tuple[str, object]] = ()) -> Registry:
    """Load the entry-point plugins (and ``extra_plugins``, as ``(name, module)``) into a Registry."""
    registry = Registry()
    disabled = _disabled()
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    found = list(_entry_point_plugins(disabled, registry.broken))
    found += [(name, "(in-process)", obj) for name, obj in extra_plugins if name not in disabled]
    for name, dist, obj in found:
        pm.register(obj, name=name)
        registry.plugins[name] = dist
    for kind, hook_name in HOOKS.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            if impl.plugin_name in registry.broken:
                continue
            staged: list[Entry] = []

            def register(name, factory, options=NoOptions, _kind=kind, _impl=impl, _staged=staged):
                dist = registry.plugins[_impl.plugin_name]
                _staged.append(Entry(_kind, name, factory, options, _impl.plugin_name, dist))

            try:
                impl.function(register=register)
            except Exception as exc:
                registry.broken[impl.plugin_name] = f"{hook_name} raised {type(exc).__name__}: {exc}"
                continue
            for entry in staged:
                _add(registry, entry)
    for name in registry.broken:  # drop everything a broken plugin had already registered
        for by_name in registry.entries.values():
            for key in [k for k, e in by_name.items() if e.plugin == name]:
                del by_name[key]
        registry.plugins.pop(name, None)
        warnings.warn(f"plugin '{name}' was disabled: {registry.broken[name]}", stacklevel=2)
    return registry


def _add(registry: Registry, entry: Entry) -> None:
    existing = registry.entries[entry.kind].get(entry.name)
    if existing is not None:
        raise UserError(
            f"{entry.kind} '{entry.name}' is registered twice: by plugin '{existing.plugin}' "
            f"({existing.distribution}) and by plugin '{entry.plugin}' ({entry.distribution}). "
            f"Disable one with RECENGINE_DISABLE_PLUGINS={entry.plugin}"
        )
    registry.entries[entry.kind][entry.name] = entry
