"""recengine: a plugin-based engine for transformer sequential recommenders."""

from recengine.errors import UserError

__version__ = "0.1.0"
__all__ = ["UserError", "__version__", "load"]


def __getattr__(name: str):
    # `recengine.load` imports torch and the model code only when first used, so
    # `import recengine` stays light (the CLI's --help, plugin listing).
    if name == "load":
        from recengine.inference import load

        return load
    raise AttributeError(f"module 'recengine' has no attribute {name!r}")
