"""The hook points of recengine.

Every hook has the same shape: ``register_<kind>(register)``. A plugin receives a
``register`` callback and calls it once per named factory::

    register(name, factory, options=OptionsModel)

``factory`` is called with a validated instance of ``OptionsModel`` (a pydantic model)
plus the few runtime values that kind needs (see docs/hooks.md). A hook never receives
the engine or the whole recipe.
"""

import pluggy

PROJECT = "recengine"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_datasets(register):
    """Register dataset factories: ``factory(options) -> recengine.data.Dataset``."""


@hookspec
def register_models(register):
    """Register model factories: ``factory(options, num_items) -> recengine.model.SequenceModel``."""


@hookspec
def register_adapters(register):
    """Register adapter factories: ``factory(options) -> recengine.components.Adapter``."""


@hookspec
def register_precisions(register):
    """Register precision factories: ``factory(options, device) -> recengine.components.Precision``."""


@hookspec
def register_compilers(register):
    """Register compiler factories: ``factory(options) -> recengine.components.Compiler``."""


@hookspec
def register_profilers(register):
    """Register profiler factories: ``factory(options, out_dir) -> recengine.components.Profiler``."""


@hookspec
def register_monitors(register):
    """Register monitor (metric sink) factories: ``factory(options, log_dir) -> recengine.components.Monitor``."""
