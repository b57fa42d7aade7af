"""Search spaces for `recengine tune`: a TOML file of recipe keys, each with a distribution.

    train.lr        = { type = "float", low = 1e-4, high = 3e-3, log = true }
    model.dropout   = { type = "float", low = 0.0, high = 0.4 }
    model.layers    = { type = "int", low = 1, high = 4 }
    train.mask_prob = { type = "categorical", choices = [0.15, 0.2, 0.3] }

A dotted key is the recipe key the value goes to (``[train]`` tables work too). Every
parameter is checked against the recipe before any trial: the recipe is resolved with each
bound and each choice, so a key the recipe does not have, or a value it would reject, is an
error before any compute is spent. This module does not need optuna.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from recengine.errors import UserError
from recengine.plugins import Registry
from recengine.recipe import Recipe, apply_overrides, read_toml, resolve


class _Distribution(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FloatParam(_Distribution):
    type: Literal["float"]
    low: float
    high: float
    log: bool = Field(False, description="Sample uniformly in log space (low must be > 0).")
    step: float | None = Field(None, gt=0, description="Discretisation step (not with log).")

    @model_validator(mode="after")
    def _check(self):
        _check_range(self.low, self.high, self.log, self.step)
        return self

    def values_to_check(self) -> list[Any]:
        return [self.low, self.high]


class IntParam(_Distribution):
    type: Literal["int"]
    low: int
    high: int
    log: bool = Field(False, description="Sample uniformly in log space (low must be >= 1).")
    step: int = Field(1, ge=1, description="Step between values (1 unless log).")

    @model_validator(mode="after")
    def _check(self):
        _check_range(self.low, self.high, self.log, None if self.step == 1 else self.step)
        return self

    def values_to_check(self) -> list[Any]:
        return [self.low, self.high]


class CategoricalParam(_Distribution):
    type: Literal["categorical"]
    choices: list[Union[bool, int, float, str]] = Field(min_length=1)

    def values_to_check(self) -> list[Any]:
        return list(self.choices)


def _check_range(low, high, log: bool, step) -> None:
    if low > high:
        raise ValueError(f"low ({low}) must not be above high ({high})")
    if log and low <= 0:
        raise ValueError(f"log = true needs low > 0 (got {low})")
    if log and step is not None:
        raise ValueError("step cannot be combined with log = true")


Distribution = Annotated[Union[FloatParam, IntParam, CategoricalParam], Field(discriminator="type")]
_distribution = TypeAdapter(Distribution)


@dataclass(frozen=True)
class Param:
    key: str  # the recipe key, e.g. "train.lr"
    distribution: FloatParam | IntParam | CategoricalParam


def override(key: str, value: Any) -> str:
    """``("train.lr", 0.001)`` -> ``"train.lr=0.001"``, the value written as TOML."""
    return f"{key}={tomli_w.dumps({'v': value}).partition('=')[2].strip()}"


def _flatten(table: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    # A table holding tables is a section to descend into; any other value is a parameter.
    out = []
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and "type" not in value and any(isinstance(v, dict) for v in value.values()):
            out += _flatten(value, path + ".")
        else:
            out.append((path, value))
    return out


def read_space(path: str | Path) -> list[Param]:
    """Parse a space file; every malformed parameter is reported at once."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: search space not found (examples are in spaces/)")
    data = read_toml(path)
    params, errors = [], []
    for key, value in _flatten(data):
        if not isinstance(value, dict):
            errors.append(f"{path}: {key}: expected a table such as {{ type = \"float\", low = 0.1, high = 0.5 }}, got {value!r}")
            continue
        try:
            params.append(Param(key, _distribution.validate_python(value)))
        except ValidationError as err:
            for e in err.errors():
                where = ".".join(str(p) for p in e["loc"][1:])  # drop the union tag
                msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
                if e["type"] == "union_tag_invalid":
                    msg = "type must be \"float\", \"int\" or \"categorical\""
                elif e["type"] == "union_tag_not_found":
                    msg = "missing type (\"float\", \"int\" or \"categorical\")"
                errors.append(f"{path}: {key}{'.' + where if where else ''}: {msg}")
    if not params and not errors:
        errors.append(f"{path}: no parameters; add one such as train.lr = {{ type = \"float\", low = 1e-4, high = 3e-3, log = true }}")
    if errors:
        raise UserError("\n".join(errors))
    return params


def recipe_with(base: dict[str, Any], values: dict[str, Any], registry: Registry, source: str) -> Recipe:
    """The base recipe data with ``values`` (recipe key -> value) set, resolved."""
    data = apply_overrides(copy.deepcopy(base), [override(key, value) for key, value in values.items()])
    return resolve(data, registry, source=source)


def check_space(params: list[Param], base: dict[str, Any], registry: Registry, space_source: str) -> None:
    """Resolve the recipe with every bound and choice of every parameter, one at a time;
    raise one line per value the recipe would reject (an unknown key among them)."""
    errors = []
    for param in params:
        for value in param.distribution.values_to_check():
            try:
                recipe_with(base, {param.key: value}, registry, source="recipe")
            except UserError as exc:
                # The recipe's own message, without its "recipe: key:" prefix when it names this key.
                reasons = [line.removeprefix("recipe: ").removeprefix(f"{param.key}: ") for line in str(exc).splitlines()]
                if any("unknown key" in r or "unknown section" in r for r in reasons):
                    errors.append(f"{space_source}: {param.key}: not a key of this recipe ({'; '.join(reasons)}); "
                                  "space keys are recipe keys such as train.lr or model.dropout")
                else:
                    errors.append(f"{space_source}: {param.key}: the recipe rejects {value!r}: {'; '.join(reasons)}")
                break  # one line per parameter is enough
    if errors:
        raise UserError("\n".join(errors))
