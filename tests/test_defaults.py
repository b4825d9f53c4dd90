"""One default per parameter (issue 30): a library function, its configuration and its CLI
command never disagree on a default. For every command registered with
:func:`tvlens.cli.options.add_command`: each option's default against its config field's, and
against the default of the parameter of the same name of the function it runs; the function's
parameters against the config's fields. The same for the library functions that take a run's
options one by one (``evaluate_icl``, ``td_over_checkpoints``, ``patch``...) and for the
extraction methods' functions against the methods' own options. :func:`disagreements` is
checked on a deliberately mismatched toy command first, so that it is known to catch one."""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.main import get_command

from tvlens.cli import app
from tvlens.cli.options import Input, add_command
from tvlens.runs.config import Config, opt

EMPTY = inspect.Parameter.empty

# Where the CLI's default is not the function's, on purpose: (command, parameter) -> (the
# CLI's, the function's).
CLI_OWN_DEFAULTS = {
    # The CLI computes cells in parallel; from Python (notebooks) one process unless asked.
    ("atv compare", "workers"): ("auto", 1),
    # --out is required by every command (issue 33); from Python the comparison keeps its
    # folder runs/compare (the functions move to tvlens/compare/ with their defaults).
    ("atv compare", "out"): (None, "runs/compare"),
    ("atv distill", "out"): (None, "runs/compare"),
}


def canonical(value: Any) -> Any:
    """A default as the CLI writes it: a list or tuple as ``a,b,c`` (a repeated option's list
    too), a dict as JSON, a path as text."""
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, Path):
        return str(value)
    return value


def field_defaults(config: type) -> dict[str, Any]:
    return {f.name: f.default if f.default is not MISSING else f.default_factory()
            for f in fields(config)}  # fmt: skip


# Where a library function's default is not its config's or method's, on purpose:
# (function, parameter) -> why.
LIBRARY_OWN_DEFAULTS = {
    # LTV's train_k=None is the official 5 capped by the task's train split (the method knows
    # the split); ltv() takes the number itself. Both read defaults.LTV_TRAIN_K.
    ("ltv", "train_k"): "None: the official 5, capped by the train split",
}


def function_disagreements(fn: Callable[..., Any], config: type) -> list[str]:
    """Each parameter of ``fn`` with a default that is not ``config``'s field of that name
    (None: "the config's", as ``config=None``, is no default of its own)."""
    found = []
    defaults = field_defaults(config)
    for name, p in inspect.signature(fn).parameters.items():
        if (fn.__name__, name) in LIBRARY_OWN_DEFAULTS:
            continue
        if name in defaults and p.default not in (EMPTY, None):
            if canonical(p.default) != canonical(defaults[name]):
                found.append(f"{fn.__name__}({name}={p.default!r}) but "
                             f"{config.__name__}.{name} = {defaults[name]!r}")  # fmt: skip
    return found


def disagreements(name: str, command: Any, fn: Callable[..., Any]) -> list[str]:
    """Every default ``tvlens name`` (a click command made by ``add_command``), its config
    and ``fn`` (the function it runs) do not share."""
    found = []
    config, overrides = command.callback.config, command.callback.overrides
    fields_ = field_defaults(config) if config is not None else {}
    sig = inspect.signature(fn).parameters
    for p in command.params:
        if p.name in fields_ and overrides:
            continue  # the option's None is "the preset's"; the fields meet fn below
        if p.name in fields_ and canonical(p.default) != canonical(fields_[p.name]):
            found.append(f"tvlens {name} --{p.name} defaults to {p.default!r} but "
                         f"{config.__name__}.{p.name} to {fields_[p.name]!r}")  # fmt: skip
        if p.name in sig and sig[p.name].default is not EMPTY:
            mine = sig[p.name].default
            if (name, p.name) in CLI_OWN_DEFAULTS:
                if (p.default, mine) != CLI_OWN_DEFAULTS[name, p.name]:
                    found.append(f"tvlens {name} --{p.name}: {(p.default, mine)!r} is not the "
                                 f"listed {CLI_OWN_DEFAULTS[name, p.name]!r}")  # fmt: skip
            elif canonical(p.default) != canonical(mine):
                found.append(f"tvlens {name} --{p.name} defaults to {p.default!r} but "
                             f"{fn.__name__}({p.name}={mine!r})")  # fmt: skip
    if config is not None:
        found += function_disagreements(fn, config)
    return found


def commands(group: Any = None, path: tuple[str, ...] = ()) -> list[tuple[str, Any]]:
    group = group or get_command(app)
    out = []
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):  # a group: atv, pretrained, cache
            out += commands(cmd, (*path, name))
        else:
            out.append((" ".join((*path, name)), cmd))
    return out


def runner_of(command: Any) -> Callable[..., Any]:
    runner = command.callback.runner
    if isinstance(runner, str):
        module, function = runner.split(":")
        runner = getattr(importlib.import_module(module), function)
    return runner


# ------------------------------------------------------------------ the checker catches one


@dataclass(frozen=True)
class Toy(Config):
    n: int = opt(3, "A count.")
    scale: float = opt(1.0, "A scale.")
    tags: tuple[str, ...] = opt(("a", "b"), "Tags.", sep=",")


def _toy_command(fn: Callable[..., Any], **kw: Any) -> Any:
    toy = typer.Typer()
    add_command(toy, "run", fn, Toy, own={"name": Input(str, "A name.", "x")}, **kw)
    toy.command("other")(lambda: None)  # two commands: typer then names them
    return get_command(toy).commands["run"]


def test_the_checker_reports_a_mismatched_toy_function():
    def agrees(name: str = "x", config: Toy | None = None, n: int = 3, **options: Any) -> None:
        """n=3: Toy's own default, written again (the same number: no disagreement)."""

    def disagrees(name: str = "y", config: Toy | None = None, scale: float = 2.0,
                  tags: tuple[str, ...] = ("a",), **options: Any) -> None:  # fmt: skip
        """name, scale and tags disagree with the CLI and Toy; n is left to the config."""

    assert disagreements("run", _toy_command(agrees), agrees) == []
    assert disagreements("run", _toy_command(disagrees), disagrees) == [
        "tvlens run --name defaults to 'x' but disagrees(name='y')",
        "tvlens run --scale defaults to 1.0 but disagrees(scale=2.0)",
        "tvlens run --tags defaults to 'a,b' but disagrees(tags=('a',))",
        "disagrees(scale=2.0) but Toy.scale = 1.0",
        "disagrees(tags=('a',)) but Toy.tags = ('a', 'b')",
    ]


def test_the_checker_reads_the_options_the_cli_made():
    """An option whose default is not its field's (as a hand-written option could be) is
    reported; with ``overrides`` (presets: an option's None is "the preset's") the fields
    are compared with the function only."""

    def fn(name: str = "x", config: Toy | None = None) -> None: ...

    cmd = _toy_command(fn)
    assert disagreements("run", cmd, fn) == []
    next(p for p in cmd.params if p.name == "n").default = 4
    assert disagreements("run", cmd, fn) == ["tvlens run --n defaults to 4 but Toy.n to 3"]

    def preset_fn(name: str = "x", n: int = 5, **overrides: Any) -> None: ...

    cmd = _toy_command(preset_fn, overrides=True)
    assert disagreements("run", cmd, preset_fn) == ["preset_fn(n=5) but Toy.n = 3"]


# ------------------------------------------------------------------ the real ones


@pytest.mark.parametrize("name, cmd", commands(), ids=lambda x: x if isinstance(x, str) else "")
def test_each_command_its_config_and_its_function_share_their_defaults(name, cmd):
    assert disagreements(name, cmd, runner_of(cmd)) == []


def test_the_checked_commands_are_the_runs():
    """The commands with a config are those of every run (a command registered without its
    config would compare nothing)."""
    with_config = {name for name, cmd in commands() if cmd.callback.config is not None}
    assert {"train-synthetic", "train-regression", "eval", "vectors", "probe", "patch",
            "emergence", "atv train", "atv compare", "atv distill", "pretrained vectors",
            "pretrained decodability", "pretrained heads",
            "pretrained finetune"} == with_config  # fmt: skip


def _library_pairs() -> list[tuple[Callable[..., Any], type]]:
    """(function, config or method class): library functions that take a run's options, or
    an extraction method's, one by one."""
    from tvlens.evaluation.config import EvalConfig
    from tvlens.evaluation.icl import evaluate_icl
    from tvlens.extraction.config import VectorsConfig
    from tvlens.extraction.function_vectors import function_vector
    from tvlens.extraction.i2cl import calibrate, implicit_icl
    from tvlens.extraction.icv import in_context_vector, tune_alpha
    from tvlens.extraction.ltv import ltv
    from tvlens.extraction.methods import I2CL, ICV, LTV, FunctionVector, StateVector
    from tvlens.extraction.state_vector import state_vector
    from tvlens.injection.evaluate import evaluate_task_vectors
    from tvlens.patching.attribution import attribution_patch
    from tvlens.patching.config import PatchConfig
    from tvlens.patching.exact import patch
    from tvlens.probing.config import EmergenceConfig, ProbeConfig
    from tvlens.probing.emergence import emergence
    from tvlens.probing.layers import td_by_layer
    from tvlens.probing.series import td_over_checkpoints

    return [(evaluate_icl, EvalConfig), (evaluate_task_vectors, VectorsConfig),
            (function_vector, FunctionVector), (patch, PatchConfig),
            (attribution_patch, PatchConfig), (td_over_checkpoints, ProbeConfig),
            (td_by_layer, ProbeConfig),
            (emergence, EmergenceConfig), (in_context_vector, ICV), (tune_alpha, ICV),
            (implicit_icl, I2CL), (calibrate, I2CL), (state_vector, StateVector),
            (ltv, LTV)]  # fmt: skip


def test_library_functions_share_their_configs_defaults():
    found = [d for fn, config in _library_pairs() for d in function_disagreements(fn, config)]
    assert found == []
    listed = {(fn.__name__, name) for fn, config in _library_pairs()
              for name in inspect.signature(fn).parameters}  # fmt: skip
    assert set(LIBRARY_OWN_DEFAULTS) <= listed  # no stale exception


def _literal(node: Any) -> str | None:
    """``node`` as written when it is a literal (a number, text, a tuple of them...), else
    None (a name or an attribute: read from a constant or a config)."""
    import ast

    try:
        ast.literal_eval(node)
    except ValueError:
        return None
    return ast.unparse(node)


def _tree(obj: Any) -> Any:
    import ast
    import textwrap

    return ast.parse(textwrap.dedent(inspect.getsource(inspect.unwrap(obj))))


def written_defaults(fn: Callable[..., Any]) -> dict[str, str]:
    """The default of each parameter of ``fn`` as written in its source, for those written as
    a literal: the ones that are not read from elsewhere."""
    import ast

    node = next(n for n in ast.walk(_tree(fn)) if isinstance(n, ast.FunctionDef))
    args = node.args
    positional = [*args.posonlyargs, *args.args]
    with_default = positional[len(positional) - len(args.defaults) :]
    pairs = list(zip(with_default, args.defaults, strict=True))
    kw = zip(args.kwonlyargs, args.kw_defaults, strict=True)
    pairs += [(a, d) for a, d in kw if d is not None]
    return {a.arg: text for a, d in pairs if (text := _literal(d)) is not None}


def written_field_defaults(config: type) -> dict[str, str]:
    """The fields of ``config`` (a config or a method class) whose default is written in its
    class body as a literal: ``n: int = opt(3, ...)`` (``opt``, ``option``: the first
    argument) or ``n: int = 3``."""
    import ast

    cls = next(n for n in ast.walk(_tree(config)) if isinstance(n, ast.ClassDef))
    out = {}
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            value = node.value
            if isinstance(value, ast.Call) and getattr(value.func, "id", "") in ("opt", "option"):
                value = value.args[0] if value.args else None
            if value is not None and (text := _literal(value)) is not None:
                out[node.target.id] = text
    return out


def test_written_defaults_finds_literals():
    def f(a, b=3, c="x", *, d=(1, 2), e=Toy.n, g=None): ...

    assert written_defaults(f) == {"b": "3", "c": "'x'", "d": "(1, 2)", "g": "None"}
    assert written_field_defaults(Toy) == {"n": "3", "scale": "1.0", "tags": "('a', 'b')"}


def _reads(fn: Callable[..., Any], config: type) -> set[str]:
    """The parameters of ``fn`` whose default is written ``Config.field``."""
    import ast

    node = next(n for n in ast.walk(_tree(fn)) if isinstance(n, ast.FunctionDef))
    args = node.args
    defaults = [*args.defaults, *[d for d in args.kw_defaults if d is not None]]
    return {
        d.attr
        for d in defaults
        if isinstance(d, ast.Attribute) and getattr(d.value, "id", "") == config.__name__
    }


def written_twice(fn: Callable[..., Any], config: type) -> list[str]:
    """Each default ``fn`` and ``config`` both write: a parameter named as a field of the config
    whose default is a literal (None, "the config's", aside), or a field written as a literal
    that the function does not read as ``Config.field`` (it has its own copy, or a constant
    the config does not read)."""
    found = []
    names = {f.name for f in fields(config)}
    for name, text in written_defaults(fn).items():
        if name in names and text != "None":
            found.append(f"{fn.__name__}({name}={text}) writes {config.__name__}.{name} again")
    sig, reads = inspect.signature(fn).parameters, _reads(fn, config)
    for name, text in written_field_defaults(config).items():
        mine = sig[name].default if name in sig else EMPTY
        if mine not in (EMPTY, None) and name not in reads and text != "None":
            found.append(f"{config.__name__}.{name} = {text}, and {fn.__name__}({name}=...) "
                         "does not read it")  # fmt: skip
    return found


def test_the_written_once_check_catches_a_copy():
    """A function that writes a config's number again, or reads a constant of its own while
    the config writes the number as a literal, is reported; one that reads it is not."""

    def copies(n: int = 3, scale: float = Toy.scale) -> None: ...

    three = 3

    def own_constant(n: int = three) -> None: ...

    def reads(n: int = Toy.n, scale: float = Toy.scale) -> None: ...

    assert written_twice(copies, Toy) == [
        "copies(n=3) writes Toy.n again",
        "Toy.n = 3, and copies(n=...) does not read it",
    ]
    assert written_twice(own_constant, Toy) == [
        "Toy.n = 3, and own_constant(n=...) does not read it"
    ]
    assert written_twice(reads, Toy) == []


def test_library_functions_read_the_config_s_defaults():
    """Not only equal: written once. Each function above reads its config's default
    (``EvalConfig.k``), or the constant the config reads (``MAX_BATCH``, ``KNN_K``,
    ``defaults.FV_TOP_K_HEADS``)."""
    assert [d for fn, config in _library_pairs() for d in written_twice(fn, config)] == []
