"""recengine: a plugin-based engine for transformer sequential recommenders."""

from recengine.errors import UserError

__version__ = "0.1.0"
__all__ = ["UserError", "__version__"]
