"""``tvlens pretrained ...``: the seed papers' pretrained-model experiments from the command
line (thin wrappers of :mod:`tvlens.experiments.pretrained`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tvlens.cli.errors import registrar
from tvlens.cli.options import DeviceOpt, ModelOpt, config_options, out_opt
from tvlens.errors import TVLensError
from tvlens.experiments.configs import (
    DecodabilityConfig,
    HeadsConfig,
    LayerFinetuneConfig,
    VectorTableConfig,
)

app = typer.Typer(
    help="The seed papers' pretrained-model experiments (default model: smollm2-135m).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

SuitesOpt = Annotated[
    list[str] | None,
    typer.Option("--suite", help="Suite name or folder (repeat for several)."),
]
TasksOpt = Annotated[
    list[str] | None,
    typer.Option("--task", help="Keep only these tasks of each suite (repeat)."),
]
NExamplesOpt = Annotated[
    int | None, typer.Option(help="At most this many (input, output) pairs per task.")
]


command = registrar(app)


def _suites(names: list[str], tasks: list[str] | None, n_examples: int | None) -> dict:
    from tvlens.experiments.pretrained import sized_suite
    from tvlens.tasks import get_suite

    out = {}
    for name in names:
        s = get_suite(name)
        keep = [t for t in s.names if tasks is None or t in tasks]
        if not keep:
            raise TVLensError(f"None of the tasks {tasks} is in suite {s.name!r}.")
        out[s.name] = sized_suite(s, n_examples, keep)
    return out


@command()
@config_options(VectorTableConfig)
def vectors(
    out: out_opt("vectors.json, table.md, figures"),
    model: ModelOpt = "smollm2-135m",
    suite: SuitesOpt = None,
    task: TasksOpt = None,
    n_examples: NExamplesOpt = None,
    bos: Annotated[str, typer.Option(help="auto, none or a token.")] = "auto",
    device: DeviceOpt = None,
    *,
    config: VectorTableConfig,
) -> None:
    """Zero-shot, ICL, task vector and function vector accuracy per task (Hendel et al.'s
    Table 1), with the layer curves."""
    from tvlens.experiments.pretrained import vector_table
    from tvlens.models import load_model

    m = load_model(model, device=device, bos=bos)
    typer.echo(vector_table(m, _suites(suite or ["words"], task, n_examples), out, config))


@command()
def combine(
    out: out_opt("the combined vectors.json, table.md"),
    parts: Annotated[list[Path], typer.Argument(help="Output folders of `pretrained vectors`.")],
) -> None:
    """Combine the tables of several `pretrained vectors` runs (a run split over processes)."""
    from tvlens.experiments.pretrained import combine_vector_tables

    typer.echo(combine_vector_tables(parts, out))


@command()
@config_options(DecodabilityConfig)
def decodability(
    out: out_opt("td.json and figures"),
    model: ModelOpt = "smollm2-135m",
    suite: SuitesOpt = None,
    task: TasksOpt = None,
    n_examples: NExamplesOpt = None,
    device: DeviceOpt = None,
    *,
    config: DecodabilityConfig,
) -> None:
    """Task decodability by layer (Null task included) and TD against ICL accuracy (R²)."""
    from tvlens.experiments.pretrained import task_decodability_table
    from tvlens.models import load_model

    m = load_model(model, device=device)
    suites = _suites(suite or ["bitwise"], task, n_examples)
    typer.echo(task_decodability_table(m, suites, out, config))


@command()
@config_options(HeadsConfig)
def heads(
    out: out_opt("heads.json and figures"),
    model: ModelOpt = "smollm2-135m",
    suite: Annotated[str, typer.Option(help="Suite name or folder.")] = "words",
    task: TasksOpt = None,
    device: DeviceOpt = None,
    *,
    config: HeadsConfig,
) -> None:
    """Exact and attribution head patching against the function-vector AIE ranking."""
    from tvlens.experiments.pretrained import head_comparison
    from tvlens.models import load_model
    from tvlens.tasks import get_suite

    m = load_model(model, device=device)
    s = get_suite(suite)
    typer.echo(head_comparison(m, s, task or s.names[:2], out, config))


@command()
@config_options(LayerFinetuneConfig)
def finetune(
    out: out_opt("metrics.json, table.md, tuned models"),
    model: ModelOpt = "smollm2-135m",
    suite: Annotated[str, typer.Option(help="Suite name or folder.")] = "words",
    task: TasksOpt = None,
    device: DeviceOpt = None,
    *,
    config: LayerFinetuneConfig,
) -> None:
    """Early- against late-layer fine-tuning, TD before and after (Han et al., Table 1)."""
    from tvlens.experiments.pretrained import layer_finetuning

    (s,) = _suites([suite], task, None).values()
    typer.echo(layer_finetuning(model, s, out, config, device=device))
