"""``tvlens ...``: the main commands (``tvlens atv`` and ``tvlens pretrained`` are in their own
modules), each a thin layer over a public function (same arguments)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tvlens.cli.errors import registrar
from tvlens.cli.options import (
    DeviceOpt,
    ModelOpt,
    ResumeOpt,
    RevisionOpt,
    SuiteOpt,
    config_options,
    out_opt,
    preset_opt,
)
from tvlens.configs import EmergenceConfig, EvalConfig, PatchConfig, ProbeConfig, VectorsConfig
from tvlens.errors import ConfigError
from tvlens.training.config import PRESETS, TrainConfig
from tvlens.training.regression_config import RegressionConfig

app = typer.Typer(
    help="tvlens: task vectors, task encoding and patching on TransformerLens 4.x.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click errors: a bad option is one "Error: ..." line, not a drawn box.
    rich_markup_mode=None,
)


# Every command prints tvlens errors as one line (tvlens.cli.errors).
command = registrar(app)


@command()
def demo(
    figures_dir: Annotated[Path, typer.Option(help="Where figures and the report go.")] = Path(
        "figures"
    ),
    run_dir: Annotated[Path, typer.Option(help="Training run to reuse or create.")] = Path(
        "runs/default"
    ),
    preset: preset_opt(PRESETS) = "default",
    device: DeviceOpt = None,
    retrain: Annotated[bool, typer.Option(help="Delete the run and train again.")] = False,
) -> None:
    """Train (or reuse) the default synthetic ICL model and write the demo figures."""
    from tvlens.demo import run_demo

    typer.echo(run_demo(figures_dir, run_dir, preset=preset, device=device, retrain=retrain))


@command("train-synthetic")
@config_options(
    TrainConfig, only=("steps", "seed", "suite", "arch", "tv_loss_weight", "tv_loss_layer"),
    overrides=True,
)  # fmt: skip
def train_synthetic_cmd(
    out: out_opt("the run"),
    preset: preset_opt(PRESETS) = "default",
    resume: ResumeOpt = False,
    device: DeviceOpt = None,
    *,
    config: dict[str, Any],
) -> None:
    """Train a small transformer from scratch on synthetic ICL tasks, with checkpoints."""
    from tvlens.training import train_synthetic

    if not isinstance(config.get("suite", {}), dict):
        raise ConfigError('--suite must be a JSON object, e.g. \'{"name": "bitwise"}\'.')
    typer.echo(train_synthetic(out, preset=preset, resume=resume, device=device, **config))


@command("eval")
@config_options(EvalConfig)
def eval_cmd(
    model: ModelOpt,
    suite: SuiteOpt = None,
    revision: RevisionOpt = None,
    device: DeviceOpt = None,
    out: Annotated[Path | None, typer.Option(help="Write results JSON here.")] = None,
    *,
    config: EvalConfig,
) -> None:
    """ICL accuracy (first token and exact match) per task."""
    from tvlens.icl_accuracy import evaluate_icl
    from tvlens.models.loading import model_and_suite
    from tvlens.runs import prepare_out_file, write_json

    if out is not None:
        prepare_out_file(out, config.kind)
    m, s = model_and_suite(model, suite, revision, device)
    fields = ("k", "n_prompts", "seed", "template", "batch_size")
    res = evaluate_icl(m, s, **{f: getattr(config, f) for f in fields})
    typer.echo(res)
    if out is not None:
        write_json(out, {**config.to_dict(), "model": m.spec.to_dict(), **res.to_dict()})


@command()
@config_options(VectorsConfig, skip=("split", "template", "max_batch"))
def vectors(
    model: ModelOpt,
    out: out_opt("results.json, vectors and figures"),
    suite: SuiteOpt = None,
    revision: RevisionOpt = None,
    device: DeviceOpt = None,
    *,
    config: VectorsConfig,
) -> None:
    """Extract task vectors (Hendel) or function vectors (Todd), sweep layers, and report
    zero-shot / ICL / vector accuracy on held-out queries."""
    from tvlens.injection import run_task_vectors

    typer.echo(run_task_vectors(model, out, suite, config, revision, device))
    typer.echo(f"wrote {out / 'results.json'}")


@command()
@config_options(ProbeConfig)
def probe(
    model: ModelOpt,
    out: out_opt("td.json and figures"),
    suite: SuiteOpt = None,
    device: DeviceOpt = None,
    *,
    config: ProbeConfig,
) -> None:
    """Task decodability (leave-one-out 10-NN, Null task included) at every layer of every
    checkpoint, against ICL accuracy."""
    from tvlens.probing.run import run_probe

    typer.echo(run_probe(model, out, suite=suite, config=config, device=device))
    typer.echo(f"wrote {out / 'td.json'}")


@command("train-regression")
@config_options(RegressionConfig, only=("mixture", "steps", "seed", "arch"), overrides=True)
def train_regression_cmd(
    out: out_opt("the run"),
    preset: Annotated[str, typer.Option(help="Preset (an unknown name lists them).")] = "cpu",
    resume: ResumeOpt = False,
    device: DeviceOpt = None,
    *,
    config: dict[str, Any],
) -> None:
    """Train a read-in/read-out transformer on the sparse-linear-regression mixture
    (Han et al. 2025), with checkpoints that load through the bridge."""
    from tvlens.training.regression import train_regression

    typer.echo(train_regression(out, preset=preset, resume=resume, device=device, **config))


@command()
@config_options(EmergenceConfig, skip=("revisions", "perturb_prompts", "perturb_steps"))
def emergence(
    run: Annotated[Path, typer.Option(help="tvlens run (token suite or regression).")],
    out: out_opt("JSON and figures"),
    *,
    config: EmergenceConfig,
) -> None:
    """Task encoding (TD per task, every layer) and decoding (loss) over a run's checkpoints,
    and the mean-state perturbation test at an early and the last checkpoint."""
    from tvlens.probing.run import run_emergence

    typer.echo(run_emergence(run, out, config=config))
    typer.echo(f"wrote {out / 'emergence.json'}")


@command()
@config_options(PatchConfig)
def patch(
    model: ModelOpt,
    out: out_opt("patching.json and the heatmap"),
    suite: SuiteOpt = None,
    revision: RevisionOpt = None,
    device: DeviceOpt = None,
    *,
    config: PatchConfig,
) -> None:
    """Activation patching (exact, or attribution patching) of every component, with a heatmap."""
    from tvlens.patching import run_patching

    typer.echo(run_patching(model, out, suite=suite, config=config, revision=revision,
                            device=device))  # fmt: skip
    typer.echo(f"wrote {out / 'patching.json'}")


@command()
def suites(
    name: Annotated[str | None, typer.Argument(help="Show the tasks of this suite.")] = None,
) -> None:
    """List the built-in task suites, or the tasks of one."""
    from tvlens.tasks import available_suites, get_suite

    for sname in [name] if name else available_suites():
        s = get_suite(sname)
        typer.echo(f"{sname}: {s.description}")
        for t in s:
            ex = t.examples[0]
            typer.echo(f"  {t.name:18s} {len(t):5d} examples  e.g. {ex.input!r} -> {ex.output!r}")


@command()
def info(
    model: ModelOpt,
    revision: RevisionOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Describe a model: sizes, hook names, checkpoints of a tvlens run."""
    from tvlens.models import load_model
    from tvlens.runs.checkpoints import is_run_dir, list_checkpoints

    typer.echo(load_model(model, revision=revision, device=device).describe())
    if is_run_dir(model):
        typer.echo("checkpoints: " + ", ".join(c.revision for c in list_checkpoints(model)))


@app.command()
def models() -> None:
    """List the pretrained models tvlens knows by short name (``--model NAME``) and whether
    each is available here."""
    from tvlens.models.pretrained import PRETRAINED, availability

    for entry in PRETRAINED.values():
        row = availability(entry)
        state = "available" if row["available"] else "not installed"
        typer.echo(f"{row['name']:16s} {state:14s} {row['description']} [{row['license']}]")
        typer.echo(f"{'':16s} from: {row['source'] or 'install with: ' + row['fix']}")


cache_app = typer.Typer(help="Converted models (GGUF files, embedded models) in tvlens's cache.")


@cache_app.command("list")
def cache_list() -> None:
    """Show the converted folders: size, where each came from."""
    from tvlens.models.pretrained import cache_root, cached_models

    rows = cached_models()
    typer.echo(f"cache: {cache_root()} ({len(rows)} converted model(s))")
    for r in rows:
        state = "" if r["complete"] else " (incomplete: rebuilt on next use)"
        typer.echo(f"  {r['name']:16s} {r['bytes'] / 2**20:8.1f} MiB  {r['folder']}{state}")
        if r["source"]:
            typer.echo(f"  {'':16s} from {r['source']} ({r['dtype']})")


@cache_app.command("clear")
def cache_clear(
    name: Annotated[
        str | None, typer.Argument(help="Only folders whose name or source contains this.")
    ] = None,
) -> None:
    """Delete converted folders (they are converted again on next use)."""
    from tvlens.models.pretrained import clear_cache

    gone = clear_cache(name=name)
    typer.echo(f"deleted {len(gone)} converted folder(s)" + "".join(f"\n  {g}" for g in gone))


def _add_subcommands() -> None:
    from tvlens.cli.atv import app as atv_app
    from tvlens.cli.pretrained import app as pretrained_app

    app.add_typer(pretrained_app, name="pretrained")
    app.add_typer(atv_app, name="atv")
    app.add_typer(cache_app, name="cache")


_add_subcommands()


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
