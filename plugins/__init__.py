"""First-party recengine plugins. Each module is registered through the `recengine`
entry-point group in pyproject.toml, exactly like a third-party package."""
