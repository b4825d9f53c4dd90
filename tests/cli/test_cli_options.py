"""CLI options built from configuration fields (tvlens.cli.options): the option's type,
default, choices and help are the field's."""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, fields
from typing import Any, Literal

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from tests.test_defaults import CLI_OWN_DEFAULTS  # where the CLI's default is its own
from tvlens.cli import app
from tvlens.cli.options import Input, add_command
from tvlens.evaluation.config import EvalConfig
from tvlens.experiments.configs import (
    DecodabilityConfig,
    HeadsConfig,
    LayerFinetuneConfig,
    VectorTableConfig,
)
from tvlens.extraction.config import VectorsConfig
from tvlens.patching.config import PatchConfig
from tvlens.probing.config import ProbeConfig
from tvlens.runs.config import Config, opt

runner = CliRunner()


@dataclass(frozen=True)
class Demo(Config):
    mode: Literal["a", "b"] = opt("a", "A mode.")
    n: int = opt(3, "A count.")
    scale: float | None = opt(None, "A scale.")
    layers: list[int] | None = opt(None, "Layers.", sep=",")
    tags: tuple[str, ...] | None = opt(None, "A tag (repeat).", flag="--tag")
    spec: dict | None = opt(None, "A spec.")
    on: bool = opt(False, "A switch.")
    minimum = {"n": 1}


def _app(overrides: bool) -> tuple[typer.Typer, list]:
    """A command ``run`` over a function that records what it was given."""
    got: list = []
    demo = typer.Typer()

    def record(name: str, config: Any = None, **given: Any) -> str:
        got.append((name, given if overrides else config))
        return "done"

    add_command(demo, "run", record, Demo, own={"name": Input(str, "A name.", "x")},
                overrides=overrides)  # fmt: skip
    demo.command("other")(lambda: None)  # two commands: typer then names them
    return demo, got


def test_options_fill_the_config():
    demo, got = _app(overrides=False)
    res = runner.invoke(demo, ["run", "--mode", "b", "--n", "5", "--layers", "0,2", "--tag",
                               "u", "--tag", "v", "--spec", '{"k": 1}', "--on"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert got == [("x", Demo(mode="b", n=5, layers=[0, 2], tags=("u", "v"), spec={"k": 1},
                              on=True))]  # fmt: skip
    res = runner.invoke(demo, ["run"])
    assert got[-1] == ("x", Demo())  # the field defaults


def test_overrides_pass_only_what_was_given():
    demo, got = _app(overrides=True)
    assert runner.invoke(demo, ["run", "--n", "7", "--no-on"]).exit_code == 0
    assert got == [("x", {"n": 7, "on": False})]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--mode", "c"], "Unknown mode 'c': mode must be one of a, b"),
        (["--layers", "0,x"], "--layers must be comma-separated integers"),
        (["--spec", "{"], "--spec is not valid JSON"),
        (["--n", "0"], "n (--n) must be >= 1, got 0"),  # the config's own check
    ],
)
def test_bad_values_are_one_line(args, message):
    demo, _ = _app(overrides=False)
    res = runner.invoke(demo, ["run", *args])
    assert res.exit_code == 2 and message in res.output, res.output


def test_a_field_without_help_is_refused():
    @dataclass(frozen=True)
    class NoHelp(Config):
        n: int = 1

    with pytest.raises(TypeError, match="NoHelp.n has no help"):
        add_command(typer.Typer(), "x", lambda config: config, NoHelp)
    with pytest.raises(TypeError, match=r"\['n'\] are inputs and config fields"):
        add_command(typer.Typer(), "x", lambda n, config: n, Demo, own={"n": Input(int, "N.")})


@pytest.mark.parametrize(
    "command, config, skip",
    [
        ("eval", EvalConfig, ()),
        ("vectors", VectorsConfig, ("split", "template", "max_batch")),
        ("patch", PatchConfig, ()),
        ("probe", ProbeConfig, ()),
        ("pretrained vectors", VectorTableConfig, ()),
        ("pretrained decodability", DecodabilityConfig, ()),
        ("pretrained heads", HeadsConfig, ()),
        ("pretrained finetune", LayerFinetuneConfig, ()),
    ],
)
def test_commands_take_defaults_choices_and_help_from_their_config(command, config, skip):
    """What `tvlens COMMAND --help` says of every field is the field's own."""
    cmd = get_command(app)
    for word in command.split():
        cmd = cmd.commands[word]
    params = {p.name: p for p in cmd.params}
    for f in fields(config):
        if f.name in skip:
            assert f.name not in params
            continue
        p = params[f.name]
        default = f.default if f.default is not MISSING else f.default_factory()
        if "sep" in f.metadata:  # a list option: written "a,b,c"
            default = ",".join(map(str, default))
        elif isinstance(default, dict):  # a JSON option
            default = json.dumps(default)
        assert p.default == (list(default) if isinstance(default, tuple) else default), f.name
        assert f.metadata["help"] in p.help
    res = runner.invoke(app, [*command.split(), "--help"])
    assert res.exit_code == 0
    if command == "patch":
        assert "[resid|attn|mlp|heads]" in res.output  # the Literal's values


def test_every_early_out_check_names_a_command_s_function():
    """``WRITES`` (the output inputs checked before the heavy imports) is keyed by the
    ``"module:function"`` a command runs: a key spelling the function another way
    (``tvlens.probing.run:run_probe`` for ``tvlens.probing.runner:run_probe``) would skip its
    command's early check without a word."""
    from tvlens.cli.options import WRITES

    runners = {cmd.callback.runner for _, cmd in _commands()}
    assert set(WRITES) - runners == set()
    for name in ("eval", "probe", "patch", "vectors", "train-synthetic"):
        assert dict(_commands())[name].callback.runner in WRITES, name


def test_cli_imports_no_torch():
    """The configs the CLI reads at start-up are torch-free modules (``tvlens --help`` is fast)."""
    import subprocess
    import sys

    code = "import sys, tvlens.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _commands(group: Any = None, path: tuple[str, ...] = ()) -> list:
    group = group or get_command(app)
    out = []
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):  # a group: atv, pretrained, cache
            out += _commands(cmd, (*path, name))
        else:
            out.append((" ".join((*path, name)), cmd))
    return out


@pytest.mark.parametrize("name, cmd", _commands(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_command_calls_its_function_with_its_defaults(name, cmd):
    """The command's function takes every input by name, with the same default (the CLI
    imports it only when the command runs, so a renamed parameter would fail late)."""
    import importlib
    import inspect

    runner = cmd.callback.runner
    if isinstance(runner, str):
        module, function = runner.split(":")
        runner = getattr(importlib.import_module(module), function)
    sig = inspect.signature(runner)
    params = {p.name: p for p in cmd.params}
    for key in cmd.callback.inputs:
        assert key in sig.parameters, f"{runner.__name__} has no parameter {key!r}"
        default = sig.parameters[key].default
        if default is inspect.Parameter.empty:
            continue  # the library asks for it; the CLI may offer one (smollm2-135m...)
        cli = params[key].default
        if isinstance(default, tuple | list):  # a comma-separated option: "1,8" is (1, 8)
            default = ",".join(map(str, default))
        if (name, key) in CLI_OWN_DEFAULTS:
            assert (cli, default) == CLI_OWN_DEFAULTS[name, key]
        else:
            assert str(cli) == str(default), f"{name} --{key}: {cli!r} vs {default!r}"
    kinds = {p.kind for p in sig.parameters.values()}
    # --threads is every command's (tvlens.runtime), applied before the function runs.
    has_config = any(p.name not in (*cmd.callback.inputs, "threads") for p in cmd.params)
    if has_config:  # its config's fields: as config= or as keyword overrides
        assert "config" in sig.parameters or inspect.Parameter.VAR_KEYWORD in kinds


def test_a_suite_name_or_spec_fills_a_suite_field():
    from tvlens.atv.config import ATVConfig
    from tvlens.training.config import TrainConfig

    assert TrainConfig(suite="bitwise").suite == {"name": "bitwise"}
    assert ATVConfig().with_overrides(suite="words").suite == {"name": "words"}
    assert ATVConfig().with_overrides(suite={"name": "words"}).suite == {"name": "words"}


def _library_functions_and_configs():
    """(function, config) pairs: a library function that takes a run's config and must not
    write any of its fields' defaults again (the command reads the config's)."""
    import importlib

    from tvlens.extraction.config import VectorsConfig
    from tvlens.injection import run_task_vectors
    from tvlens.injection.evaluate import evaluate_task_vectors

    out = [(evaluate_task_vectors, VectorsConfig), (run_task_vectors, VectorsConfig)]
    for _name, cmd in _commands():
        runner = cmd.callback.runner
        if isinstance(runner, str):
            module, function = runner.split(":")

            runner = getattr(importlib.import_module(module), function)
        config = getattr(cmd.callback, "config", None)
        if config is not None:
            out.append((runner, config))
    return out


def test_no_library_function_repeats_a_config_default():
    """One default per parameter: a function that takes a config takes its fields through
    it (``config=`` or ``**options``), never as parameters with defaults of their own, which
    could disagree with the config's (and so with the CLI's)."""
    import inspect

    pairs = _library_functions_and_configs()
    assert len(pairs) >= 2
    for fn, config in pairs:
        names = {f.name for f in fields(config)}
        sig = inspect.signature(fn)
        twice = [
            p
            for p in sig.parameters.values()
            if p.name in names and p.default not in (inspect.Parameter.empty, None)
        ]  # fmt: skip  (None: "the config's")
        assert not twice, f"{fn.__name__} repeats {config.__name__} defaults: {twice}"


def test_method_options_have_one_default():
    """The function vector's options in the config are the method's own fields."""
    from tvlens.extraction.methods import FunctionVector
    from tvlens.runs.config import MAX_BATCH

    cfg = VectorsConfig()
    assert cfg.top_k_heads == FunctionVector().top_k_heads
    assert cfg.fv_scale == FunctionVector().scale
    assert cfg.max_batch == MAX_BATCH == PatchConfig().max_batch
    helps = {f.name: f.metadata["help"] for f in fields(VectorsConfig)}
    assert helps["top_k_heads"] == FunctionVector.option_help("top_k_heads")


def test_library_functions_share_their_commands_defaults():
    """A library function that takes a run's options one by one (not its config) has the
    config's defaults, read from it: ``evaluate_icl`` and ``tvlens eval`` agree."""
    import inspect

    from tvlens.evaluation.icl import evaluate_icl

    sig = inspect.signature(evaluate_icl).parameters
    shared = [f for f in fields(EvalConfig) if f.name in sig]
    assert {f.name for f in shared} == {"k", "n_prompts", "seed", "template", "batch_size"}
    for f in shared:
        assert sig[f.name].default == f.default, f.name
