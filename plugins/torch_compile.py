"""Compiler `torch-compile`: ``torch.compile`` with a safe fallback to eager.

Compilation happens lazily at the first call, and that is where a missing C compiler,
a Triton/inductor failure or an unsupported construct shows up. The wrapper catches a
failure there, warns once, and runs the plain function from then on, so a run never
dies because the toolchain is missing. An error that eager execution also raises is a
real bug and propagates from the eager call.
"""

from __future__ import annotations

import difflib
import functools
import types
import typing
import warnings
from typing import Any, Callable, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from recengine.hookspecs import hookimpl


class CompileOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field(
        "default", description="torch.compile mode; reduce-overhead adds CUDA graphs (static shapes only).")
    dynamic: bool | None = Field(
        None, description="Dynamic shapes: None lets torch decide (static first, dynamic after a shape change), false always specialises.")
    fullgraph: bool = Field(False, description="Fail instead of splitting the graph at unsupported code.")
    backend: str = Field("inductor", description="torch.compile backend (inductor; aot_eager to debug tracing).")
    recompile_limit: int | None = Field(
        None, ge=1, description="Compiled shapes kept per function before falling back to eager (torch's default: 8). "
                                "Static shapes need one per (trimmed length, masked-slot budget) pair: with train.length_grouping "
                                "that is 15-25; `recengine bench` reports the count as distinct_shapes.")
    inductor: dict[str, bool | int | float | str] = Field(
        {}, description="Inductor options for this compile, over those the mode sets (torch.compile's `options`), "
                        "e.g. {combo_kernels = true} to launch independent small kernels together.")

    @field_validator("inductor", mode="before")
    @classmethod
    def _dotted_keys(cls, options: Any) -> Any:
        """TOML reads `{triton.cudagraphs = true}` as a nested table; inductor names it "triton.cudagraphs"."""
        def flat(table: dict, prefix: str = "") -> dict:
            out = {}
            for key, value in table.items():
                out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
            return out

        return flat(options) if isinstance(options, dict) else options

    @field_validator("inductor")
    @classmethod
    def _inductor_options_known(cls, options: dict) -> dict:
        """Names and value types are checked here: torch.compile would raise on them outside the eager fallback."""
        if not options:
            return options
        import torch._inductor.config as config
        from torch._inductor import list_options

        known = list_options()
        checked = {}
        for key, value in options.items():
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else " (torch._inductor.list_options() has them all)"
                raise PydanticCustomError("inductor_option", f"'{key}' is not an inductor option{hint}")
            default = functools.reduce(getattr, key.split("."), config)
            kinds = (type(default),) if default is not None else _annotated_kinds(config, key)
            if float in kinds and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if type(value) not in kinds:
                wanted = " or ".join(kind.__name__ for kind in kinds) if kinds else "a value of a kind recipes cannot hold"
                raise PydanticCustomError("inductor_type", f"'{key}' takes {wanted}, not {value!r}")
            checked[key] = value
        return checked

    @model_validator(mode="after")
    def _inductor_options_need_inductor(self):
        if self.inductor and self.backend != "inductor":
            raise PydanticCustomError("inductor_backend", f'inductor options need backend = "inductor" (backend is "{self.backend}")')
        return self


def _annotated_kinds(config: Any, key: str) -> tuple[type, ...]:
    """The recipe-expressible types an inductor option with a None default is annotated with
    (``reorder_prefetch_limit: int | None``): the default alone does not say what it takes.

    Only the members of the annotation's top-level union count, so ``Callable[[int], int] | None``
    takes none of them. Sub-config options (``triton.max_tiles``) have no ``__annotations__`` on
    their proxy; torch's config entry keeps the type (``value_type``) for every option."""
    *owner, name = key.split(".")
    annotation = getattr(getattr(config, "_config", {}).get(key), "value_type", None)
    if annotation is None:
        annotation = (getattr(functools.reduce(getattr, owner, config), "__annotations__", None) or {}).get(name)
    if isinstance(annotation, str):  # postponed: only a plain union of names ("int | None") is read, nothing nested
        members = {part.strip() for part in annotation.split("|")} if "[" not in annotation else set()
        return tuple(kind for kind in (bool, int, float, str) if kind.__name__ in members)
    members = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else (annotation,)
    return tuple(kind for kind in (bool, int, float, str) if kind in members)


def mode_and_options(options: CompileOptions) -> dict:
    """torch.compile's ``mode`` or, with inductor options, ``options``: it refuses both at once, so the
    mode's own options (CUDA graphs for reduce-overhead...) are spelt out and the user's go over them."""
    if not options.inductor:
        return {"mode": None if options.mode == "default" else options.mode}
    from torch._inductor import list_mode_options

    return {"options": {**list_mode_options(options.mode, options.dynamic), **options.inductor}}


def uses_cuda_graphs(options: CompileOptions) -> bool:
    chosen = mode_and_options(options)
    if "options" in chosen:
        return bool(chosen["options"].get("triton.cudagraphs", False))
    return options.mode in ("reduce-overhead", "max-autotune")


def _nothing() -> None:
    pass


class CompileFallbackWarning(UserWarning):
    """torch.compile could not run; the function runs eagerly."""


class Compiled:
    """``fn`` compiled on first call, or ``fn`` itself if compiling fails there."""

    def __init__(self, fn: Callable, options: CompileOptions):
        self.fn = fn
        if options.recompile_limit is not None:  # process-wide in torch; past it dynamo runs eagerly
            # `recompile_limit` from torch 2.7; `cache_size_limit` before (an alias after).
            name = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
            setattr(torch._dynamo.config, name, options.recompile_limit)
        self.compiled = torch.compile(fn, dynamic=options.dynamic, fullgraph=options.fullgraph, backend=options.backend,
                                      **mode_and_options(options))
        self.checked = False  # True once the compiled version has run (or been given up)
        # CUDA-graph modes record one graph tree per function. Without a step marker, a call
        # after a call of another shape is recorded as that one's child, so distinct shapes
        # (length grouping) re-record for every new pair of consecutive shapes: measured at
        # 130M on H100, a 5.7 ms median step averaged 9.1 ms. Marking each call as a new
        # step keeps one graph per shape.
        self.mark_step = torch.compiler.cudagraph_mark_step_begin if uses_cuda_graphs(options) else _nothing
        functools.update_wrapper(self, fn)

    def __call__(self, *args, **kwargs):
        self.mark_step()
        if self.checked:
            return self.compiled(*args, **kwargs)
        try:
            out = self.compiled(*args, **kwargs)
        except Exception as exc:  # any compile failure: the toolchain, inductor, dynamo
            warnings.warn(f"torch.compile failed ({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); "
                          "running eagerly instead", CompileFallbackWarning, stacklevel=2)
            self.compiled = self.fn
            out = self.fn(*args, **kwargs)
        self.checked = True
        return out


def torch_compile(options: CompileOptions) -> Callable[[Callable], Callable]:
    return lambda fn: Compiled(fn, options)


@hookimpl
def register_compilers(register):
    register("torch-compile", torch_compile, options=CompileOptions)
