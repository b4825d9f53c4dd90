"""The one base of every configuration dataclass (training, ATV, comparison, analysis runs):
overrides by field name, validation with one error type and one message form, the JSON form
written to ``config.json``, and each field's help (:func:`opt`), from which the CLI builds its
options (``tvlens.cli.options``)."""

from __future__ import annotations

import functools
import json
import typing
from collections.abc import Sequence
from dataclasses import MISSING, Field, asdict, field, fields, replace
from typing import Any, ClassVar, Literal, get_args, get_origin

from tvlens.errors import ConfigError
from tvlens.names import renamed
from tvlens.runs import KIND_KEY

# Rows per forward pass where a run batches prompts x copies (layer sweeps, patching, the
# function vector's AIE): the one default of every ``max_batch``.
MAX_BATCH = 1024


def no_type_check(cls: type) -> type:
    """Marks a config class for jaxtyping's import hook (which skips what is decorated with a
    ``no_type_check``), so that the test suite's runtime type checker does not reject a bad
    choice with its own error before ``__post_init__`` raises the :class:`ConfigError` users
    see. Unlike ``typing.no_type_check`` it leaves ``get_type_hints`` working."""
    return cls


def opt(default: Any = MISSING, help: str = "", *, factory: Any = MISSING, **meta: Any) -> Any:
    """A dataclass field with its help (and any other metadata, e.g. ``choices=fn`` for a
    registry, ``flag="--revision"`` for the CLI's option name)."""
    return field(default=default, default_factory=factory, metadata={"help": help, **meta})


def method_opt(method: type, name: str, **meta: Any) -> Any:
    """A config field for the option ``name`` of a method class (a dataclass): its default
    and its help are the method's own, written once, there."""
    f = method.__dataclass_fields__[name]  # type: ignore[attr-defined]
    return opt(f.default, f.metadata.get("help", ""), **meta)


def _literal_args(hint: Any) -> tuple | None:
    """The values of ``Literal[...]`` or ``Literal[...] | None`` (None: not a Literal)."""
    if get_origin(hint) is Literal:
        return get_args(hint)
    lits = [a for a in get_args(hint) if get_origin(a) is Literal]
    return get_args(lits[0]) if lits else None


@functools.cache
def _hints(config: type) -> dict[str, Any]:
    """``config``'s resolved field types, once per class (resolving them is the slow part of
    making a config)."""
    return typing.get_type_hints(config)


def _allowed(config: type, f: Field) -> tuple[Any, ...] | None:
    if "choices" in f.metadata:  # a registry: read each time (methods can be registered late)
        return tuple(f.metadata["choices"]())
    return _literal_args(_hints(config)[f.name])


def choices(config: type, name: str) -> tuple[Any, ...] | None:
    """The values the field ``name`` of ``config`` accepts: the registry its metadata names
    (``opt(..., choices=fn)``), its ``Literal``, or None (any value of its type)."""
    f = next((f for f in fields(config) if f.name == name), None)
    if f is None:
        raise KeyError(f"{config.__name__} has no field {name!r}.")
    return _allowed(config, f)


def redefault(config: type, name: str, default: Any, help: str | None = None) -> Any:
    """The field ``name`` of ``config`` (its help, choices, flag...) with another default (and
    help), for a subclass that changes only that: nothing else is written twice."""
    f = config.__dataclass_fields__[name]  # type: ignore[attr-defined]
    meta = {**f.metadata, **({"help": help} if help is not None else {})}
    return field(default=default, metadata=meta)


def without_defaults(obj: Any, values: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """``values`` (the dataclass ``obj`` as a dict) less the fields in ``names`` that are at
    their defaults: a field added after runs were saved is written only when set, so those
    runs' configs still compare equal and resume (:meth:`Config.to_dict`, and the option
    blocks' ``saved``)."""
    defaults = {f.name: f.default for f in fields(obj)}
    return {k: v for k, v in values.items() if not (k in names and v == defaults[k])}


class Config:
    """What every configuration shares. A subclass is a frozen dataclass; its fields' choices
    are ``Literal`` types (or a registry, :func:`opt`) and its lower bounds ``minimum``, both
    checked here, when the config is made, so that nothing deeper checks them again."""

    # The run kind written into ``config.json`` (analysis runs); None: not written.
    kind: ClassVar[str | None] = None
    # What the options are called in errors ("training", "ATV", ...).
    _kind: ClassVar[str] = "configuration"
    # field -> smallest allowed value (None values are left alone: "the default").
    minimum: ClassVar[dict[str, int]] = {}
    # Fields left out of ``config.json`` while at their default (options added after runs
    # were saved without them: those runs still compare equal and resume).
    _omit_at_default: ClassVar[tuple[str, ...]] = ()
    # Old field name -> new one: still accepted by :meth:`with_overrides` (with a
    # ``DeprecationWarning``) and read from saved configs (:meth:`upgrade`).
    renamed_fields: ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            allowed = _allowed(type(self), f)
            value = getattr(self, f.name)
            if f.metadata.get("spec"):  # a suite spec: a name is {"name": name}
                value = self._spec(f.name, value)
            if allowed is not None and value is not None:
                self.check_choice(f.name, allowed)
            low = self.minimum.get(f.name)
            if low is not None and value is not None and value < low:
                raise ConfigError(
                    f"{f.name} (--{f.name.replace('_', '-')}) must be >= {low}, got {value}."
                )

    def _spec(self, name: str, value: Any) -> dict:
        if isinstance(value, str):
            value = {"name": value}
            object.__setattr__(self, name, value)  # frozen: set once, while being made
        if not isinstance(value, dict):
            raise ConfigError(
                f"--{name.replace('_', '-')} must be a suite name or a JSON object, e.g. "
                f'\'{{"name": "bitwise"}}\', got {value!r}.'
            )
        return value

    def renamed_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """``overrides`` with old field names (``renamed_fields``) replaced, warned."""
        for old, new in self.renamed_fields.items():
            if old in overrides:
                overrides = dict(overrides)
                overrides[new] = renamed(old, overrides.pop(old), new, overrides.get(new))
        return overrides

    def with_overrides(self, **overrides: Any):
        """A copy with these fields replaced (None values are ignored: "keep")."""
        names = {f.name for f in fields(self)}  # type: ignore[arg-type]
        overrides = self.renamed_overrides(overrides)
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(f"Unknown {self._kind} option(s) {unknown}; valid: {sorted(names)}.")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[type-var]

    @classmethod
    def upgrade(cls, saved: dict[str, Any]) -> dict[str, Any]:
        """A saved config (or fingerprint) dict with its old field names replaced by the
        current ones, so that runs saved before a rename still compare equal and resume."""
        return {cls.renamed_fields.get(k, k): v for k, v in saved.items()}

    def to_dict(self) -> dict[str, Any]:
        """As written to ``config.json`` (JSON types: tuples become lists; the run's kind
        first where it has one), so that it compares equal to a saved config."""
        d = without_defaults(self, json.loads(json.dumps(self._as_dict())), self._omit_at_default)
        return {KIND_KEY: self.kind, **d} if self.kind else d

    def _as_dict(self) -> dict[str, Any]:
        """The fields as plain values (a subclass writes an object field its own way)."""
        return asdict(self)  # type: ignore[call-overload]

    # The checks a ``__post_init__`` makes beyond choices and ``minimum``, same message forms.
    def check_at_least(self, minimum: int, *names: str, why: str = "") -> None:
        """:class:`ConfigError` unless every field in ``names`` is ``>= minimum``."""
        values = [getattr(self, n) for n in names]
        if min(values) < minimum:
            raise ConfigError(
                f"{' and '.join(names)} must be >= {minimum}{why}, "
                f"got {', '.join(str(v) for v in values)}."
            )

    def check_choice(self, name: str, valid: typing.Sequence[Any]) -> None:
        """:class:`ConfigError` unless field ``name`` is one of ``valid`` (a list field: each
        of its items)."""
        value = getattr(self, name)
        items = value if isinstance(value, (list, tuple)) else (value,)
        if self.__dataclass_fields__[name].metadata.get("objects"):  # type: ignore[attr-defined]
            items = [v for v in items if isinstance(v, str)]  # objects: checked by the field
        for value in (v for v in items if v not in valid):
            raise ConfigError(
                f"Unknown {name} {value!r}: {name} must be one of {', '.join(map(str, valid))}."
            )
