"""``tvlens pretrained ...``: the seed papers' pretrained-model experiments from the command
line (thin wrappers of :mod:`tvlens.experiments.pretrained`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tvlens.cli.errors import number_list, registrar
from tvlens.errors import TVLensError
from tvlens.extraction.registry import expand_methods, extraction_choices

app = typer.Typer(
    help="The seed papers' pretrained-model experiments (default model: smollm2-135m).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

ModelOpt = Annotated[str, typer.Option(help="Short name, HF name or model folder.")]
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


def _split(text: str) -> tuple[float, ...]:
    return tuple(number_list(text, "--split", float, "three fractions like 0.5,0.2,0.3"))


@command()
def vectors(
    out: Annotated[Path, typer.Option(help="Folder for vectors.json, table.md, figures.")],
    model: ModelOpt = "smollm2-135m",
    suite: SuitesOpt = None,
    task: TasksOpt = None,
    n_examples: NExamplesOpt = None,
    method: Annotated[
        str, typer.Option(help=f"{', '.join(extraction_choices())} (both: every method).")
    ] = "both",
    k: Annotated[int, typer.Option(help="Demonstrations.")] = 5,
    n_extract: Annotated[int, typer.Option(help="Prompts per vector.")] = 32,
    template: Annotated[str | None, typer.Option(help="arrow, hendel, qa/todd.")] = None,
    bos: Annotated[str, typer.Option(help="auto, none or a token.")] = "auto",
    split: Annotated[
        str, typer.Option(help="train,dev,test fractions of each task.")
    ] = "0.5,0.2,0.3",
    seed: int = 0,
    device: Annotated[str | None, typer.Option(help="cuda, mps or cpu.")] = None,
) -> None:
    """Zero-shot, ICL, task vector and function vector accuracy per task (Hendel et al.'s
    Table 1), with the layer curves."""
    from tvlens.experiments.pretrained import vector_table
    from tvlens.models import load_model

    methods = expand_methods(method)
    fractions = _split(split)
    m = load_model(model, device=device, bos=bos)
    res = vector_table(m, _suites(suite or ["words"], task, n_examples), out,
                       methods=methods, k=k, n_extract=n_extract, seed=seed,
                       template=template,
                       split=fractions)  # fmt: skip
    typer.echo((out / "table.md").read_text())
    typer.echo(json.dumps(res["summary"], indent=1))


@command()
def combine(
    out: Annotated[Path, typer.Option(help="Folder for the combined vectors.json, table.md.")],
    parts: Annotated[list[Path], typer.Argument(help="Output folders of `pretrained vectors`.")],
) -> None:
    """Combine the tables of several `pretrained vectors` runs (a run split over processes)."""
    from tvlens.experiments.pretrained import combine_vector_tables

    res = combine_vector_tables(parts, out)
    typer.echo((out / "table.md").read_text())
    typer.echo(json.dumps(res["summary"], indent=1))


@command()
def decodability(
    out: Annotated[Path, typer.Option(help="Folder for td.json and figures.")],
    model: ModelOpt = "smollm2-135m",
    suite: SuitesOpt = None,
    task: TasksOpt = None,
    n_examples: NExamplesOpt = None,
    n_prompts: Annotated[int, typer.Option(help="Prompts per task.")] = 40,
    k: Annotated[int, typer.Option(help="Demonstrations.")] = 5,
    seed: int = 0,
    device: Annotated[str | None, typer.Option(help="cuda, mps or cpu.")] = None,
) -> None:
    """Task decodability by layer (Null task included) and TD against ICL accuracy (R²)."""
    from tvlens.experiments.pretrained import task_decodability_table
    from tvlens.models import load_model

    m = load_model(model, device=device)
    res = task_decodability_table(m, _suites(suite or ["bitwise"], task, n_examples), out,
                                  k=k, n_prompts=n_prompts, seed=seed)  # fmt: skip
    for label, r in res["suites"].items():
        c = r["td_vs_icl"]
        typer.echo(
            f"{label}: peak TD {r['peak_td']:.2f} at layer {r['peak_layer']} (chance "
            f"{r['chance']:.2f}); TD vs ICL r={c['pearson_r']}, R2={c['r2']}"
        )
    typer.echo(f"pooled: {res['pooled_td_vs_icl']}")


@command()
def heads(
    out: Annotated[Path, typer.Option(help="Folder for heads.json and figures.")],
    model: ModelOpt = "smollm2-135m",
    suite: Annotated[str, typer.Option(help="Suite name or folder.")] = "words",
    task: TasksOpt = None,
    n_prompts: Annotated[int, typer.Option(help="Patching prompts per task.")] = 16,
    k: Annotated[int, typer.Option(help="Demonstrations.")] = 5,
    seed: int = 0,
    device: Annotated[str | None, typer.Option(help="cuda, mps or cpu.")] = None,
) -> None:
    """Exact and attribution head patching against the function-vector AIE ranking."""
    from tvlens.experiments.pretrained import head_comparison
    from tvlens.models import load_model
    from tvlens.tasks import get_suite

    m = load_model(model, device=device)
    s = get_suite(suite)
    res = head_comparison(m, s, task or s.names[:2], out, k=k, n_prompts=n_prompts,
                          seed=seed)  # fmt: skip
    for t, r in res["tasks"].items():
        typer.echo(f"{t}: {json.dumps(r['overlap_top10'])}, Spearman "
                   f"{r['spearman_attribution_vs_exact']:.2f}")  # fmt: skip


@command()
def finetune(
    out: Annotated[Path, typer.Option(help="Folder for metrics.json, table.md, tuned models.")],
    model: ModelOpt = "smollm2-135m",
    suite: Annotated[str, typer.Option(help="Suite name or folder.")] = "words",
    task: TasksOpt = None,
    k_layers: Annotated[int, typer.Option(help="Blocks tuned (first k, then last k).")] = 5,
    method: Annotated[str, typer.Option(help="lora or full.")] = "lora",
    steps: Annotated[int, typer.Option(help="Training steps of each fine-tuning.")] = 60,
    lr: float = 1e-3,
    batch_size: int = 8,
    n_prompts: Annotated[int, typer.Option(help="Held-out prompts per task for TD.")] = 40,
    seed: int = 0,
    device: Annotated[str | None, typer.Option(help="cuda, mps or cpu.")] = "cpu",
) -> None:
    """Early- against late-layer fine-tuning, TD before and after (Han et al., Table 1)."""
    from tvlens.experiments.pretrained import layer_finetuning

    (s,) = _suites([suite], task, None).values()
    layer_finetuning(model, s, out, k_layers=k_layers, method=method, steps=steps, lr=lr,
                     batch_size=batch_size, n_prompts=n_prompts, seed=seed,
                     device=device)  # fmt: skip
    typer.echo((out / "table.md").read_text())
