"""``tvlens ...``: the main commands (``tvlens atv`` and ``tvlens pretrained`` are in their own
modules), each a thin layer over a public function (same arguments)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from tvlens.cli.errors import registrar
from tvlens.cli.options import config_options
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


# Options several commands share.
ModelOpt = Annotated[str, typer.Option(help="HF name, model folder or tvlens run.")]
SuiteOpt = Annotated[
    str | None, typer.Option(help="Suite name or folder (default: the model's training suite).")
]
RevisionOpt = Annotated[str | None, typer.Option(help="Revision / checkpoint.")]
DeviceOpt = Annotated[str | None, typer.Option(help="cuda, mps or cpu (default: best).")]


@command()
def demo(
    figures_dir: Annotated[Path, typer.Option(help="Where figures and the report go.")] = Path(
        "figures"
    ),
    run_dir: Annotated[Path, typer.Option(help="Training run to reuse or create.")] = Path(
        "runs/default"
    ),
    preset: Annotated[str, typer.Option(help="Training preset: " + ", ".join(PRESETS))] = "default",
    device: DeviceOpt = None,
    retrain: Annotated[bool, typer.Option(help="Delete the run and train again.")] = False,
) -> None:
    """Train (or reuse) the default synthetic ICL model and write the demo figures."""
    from tvlens.demo import run_demo

    res = run_demo(figures_dir, run_dir, preset=preset, device=device, retrain=retrain)
    s = res.summary
    typer.echo(f"run: {res.run_dir}  figures: {res.figures_dir}  ({s['seconds']} s)")
    typer.echo(
        f"ICL accuracy 0.9 first reached at step {s['first_step_with_icl_accuracy_0.9']};"
        f" final accuracy {s['final_icl_evaluation']['mean_first_token']:.3f}"
    )
    for name, f in res.figures.items():
        typer.echo(f"  {name}: {f.png or f.html}")


def _train(
    train: Callable[..., Any], out: Path, report: Callable[[dict], str], **options: Any
) -> None:
    """Run a training function and print one line: checkpoints, folder, time, and ``report`` of
    the last checkpoint's metrics (an empty dict when there is none)."""
    res = train(out, **options)
    last = res.metrics["checkpoints"][-1] if res.metrics["checkpoints"] else {}
    typer.echo(
        f"{len(res.checkpoints)} checkpoints in {res.run_dir} ({res.seconds:.0f} s); "
        + report(last)
    )


@command("train-synthetic")
@config_options(
    TrainConfig, only=("steps", "seed", "suite", "arch", "tv_loss_weight", "tv_loss_layer"),
    overrides=True,
)  # fmt: skip
def train_synthetic_cmd(
    out: Annotated[Path, typer.Option(help="Run folder to write.")],
    preset: Annotated[str, typer.Option(help="Training preset: " + ", ".join(PRESETS))] = "default",
    resume: Annotated[bool, typer.Option(help="Continue the run in --out.")] = False,
    device: DeviceOpt = None,
    *,
    config: dict[str, Any],
) -> None:
    """Train a small transformer from scratch on synthetic ICL tasks, with checkpoints."""
    from tvlens.training import train_synthetic

    if not isinstance(config.get("suite", {}), dict):
        raise ConfigError('--suite must be a JSON object, e.g. \'{"name": "bitwise"}\'.')
    _train(
        train_synthetic, out,
        lambda last: f"final loss {last.get('loss', float('nan')):.3f}, "
        f"ICL accuracy {last.get('mean_icl_accuracy', float('nan')):.3f}",
        preset=preset, resume=resume, device=device, **config,
    )  # fmt: skip


@command("eval")
@config_options(EvalConfig)
def eval_cmd(
    model: ModelOpt,
    suite: SuiteOpt = None,
    revision: Annotated[str | None, typer.Option(help="Revision / checkpoint (step750).")] = None,
    device: DeviceOpt = None,
    out: Annotated[Path | None, typer.Option(help="Write results JSON here.")] = None,
    *,
    config: EvalConfig,
) -> None:
    """ICL accuracy (first token and exact match) per task."""
    from tvlens.icl_accuracy import evaluate_icl
    from tvlens.models.loading import model_and_suite
    from tvlens.runs import prepare_out_file

    cfg = config
    if out is not None:
        prepare_out_file(out, cfg.kind)
    m, s = model_and_suite(model, suite, revision, device)
    res = evaluate_icl(
        m, s, k=cfg.k, n_prompts=cfg.n_prompts, seed=cfg.seed, template=cfg.template,
        batch_size=cfg.batch_size,
    )  # fmt: skip
    for name, t in res.tasks.items():
        typer.echo(
            f"{name:24s} first-token {t.first_token:.3f}  exact {t.exact_match:.3f}  (n={t.n})"
        )
    typer.echo(
        f"{'mean':24s} first-token {res.mean_first_token:.3f}  exact {res.mean_exact_match:.3f}"
    )
    if out is not None:
        from tvlens.runs import write_json

        write_json(out, {**cfg.to_dict(), "model": m.spec.to_dict(), **res.to_dict()})


@command()
@config_options(VectorsConfig, skip=("split", "template", "max_batch"))
def vectors(
    model: ModelOpt,
    out: Annotated[Path, typer.Option(help="Folder for results.json, vectors and figures.")],
    suite: SuiteOpt = None,
    revision: RevisionOpt = None,
    device: DeviceOpt = None,
    *,
    config: VectorsConfig,
) -> None:
    """Extract task vectors (Hendel) or function vectors (Todd), sweep layers, and report
    zero-shot / ICL / vector accuracy on held-out queries."""
    from tvlens.injection import format_table, run_task_vectors, summary_table

    rep = run_task_vectors(model, out, suite=suite, config=config, revision=revision,
                           device=device)  # fmt: skip
    typer.echo(format_table(summary_table(rep)))
    typer.echo(f"wrote {out / 'results.json'}")


@command()
@config_options(ProbeConfig)
def probe(
    model: Annotated[str, typer.Option(help="tvlens run, HF name or model folder.")],
    out: Annotated[Path, typer.Option(help="Folder for td.json and figures.")],
    suite: SuiteOpt = None,
    device: DeviceOpt = None,
    *,
    config: ProbeConfig,
) -> None:
    """Task decodability (leave-one-out 10-NN, Null task included) at every layer of every
    checkpoint, against ICL accuracy."""
    from tvlens.probing.run import run_probe

    series = run_probe(model, out, suite=suite, config=config, device=device)
    for rev, r in zip(series.revisions, series.by_checkpoint, strict=True):
        typer.echo(
            f"{rev:>12s}  TD by layer "
            + " ".join(f"{x:.2f}" for x in r.td)
            + f"  (peak layer {r.peak_layer})"
        )
    pooled = series.correlations()["pooled"]
    if pooled["pearson_r"] is not None:
        typer.echo(f"TD vs accuracy: r = {pooled['pearson_r']:.2f}, R2 = {pooled['r2']:.2f}")
    typer.echo(f"wrote {out / 'td.json'}")


@command("train-regression")
@config_options(RegressionConfig, only=("mixture", "steps", "seed", "arch"), overrides=True)
def train_regression_cmd(
    out: Annotated[Path, typer.Option(help="Run folder to write.")],
    preset: Annotated[str, typer.Option(help="Preset (an unknown name lists them).")] = "cpu",
    resume: Annotated[bool, typer.Option(help="Continue the run in --out.")] = False,
    device: DeviceOpt = None,
    *,
    config: dict[str, Any],
) -> None:
    """Train a read-in/read-out transformer on the sparse-linear-regression mixture
    (Han et al. 2025), with checkpoints that load through the bridge."""
    from tvlens.training.regression import train_regression

    _train(
        train_regression, out,
        lambda last: "final MSE "
        + ", ".join(f"{t} {v:.3f}" for t, v in last.get("query_loss", {}).items()),
        preset=preset, resume=resume, device=device, **config,
    )  # fmt: skip


@command()
@config_options(EmergenceConfig, skip=("revisions", "perturb_prompts", "perturb_steps"))
def emergence(
    run: Annotated[Path, typer.Option(help="tvlens run (token suite or regression).")],
    out: Annotated[Path, typer.Option(help="Folder for JSON and figures.")],
    *,
    config: EmergenceConfig,
) -> None:
    """Task encoding (TD per task, every layer) and decoding (loss) over a run's checkpoints,
    and the mean-state perturbation test at an early and the last checkpoint."""
    from tvlens.probing.run import run_emergence

    res = run_emergence(run, out, config=config)
    em = res["emergence"]
    for s, row in zip(em.steps, em.td, strict=True):
        typer.echo(f"step {s:>7d}  TD by layer " + " ".join(f"{x:.2f}" for x in row))
    for t, o in em.onsets().items():
        typer.echo(f"{t:12s} TD>=0.5 at step {o['td_step']}, loss halved at step {o['loss_step']}")
    for p in res.get("perturbation", []):
        typer.echo(f"perturbation step {p.step} layer {p.layer}: {p.summary()}")
    typer.echo(f"wrote {out / 'emergence.json'}")


@command()
@config_options(PatchConfig)
def patch(
    model: ModelOpt,
    out: Annotated[Path, typer.Option(help="Folder for patching.json and the heatmap.")],
    suite: SuiteOpt = None,
    revision: RevisionOpt = None,
    device: DeviceOpt = None,
    *,
    config: PatchConfig,
) -> None:
    """Activation patching (exact, or attribution patching) of every component, with a heatmap."""
    from tvlens.patching import run_patching

    run = run_patching(model, out, suite=suite, config=config, revision=revision, device=device)
    res = run.main
    typer.echo(
        f"{res.method} patching, {config.component} ({config.positions}): clean "
        f"{res.clean_metric:.3f}, corrupted {res.corrupted_metric:.3f}; "
        f"{run.config['n_prompts']} prompts"
    )
    for where, effect in res.top(5):
        typer.echo("  " + " ".join(f"{d}={i}" for d, i in where.items()) + f"  {effect:+.4f}")
    if run.spearman is not None:
        typer.echo(f"attribution vs exact: Spearman {run.spearman:.3f}")
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

    m = load_model(model, revision=revision, device=device)
    typer.echo(repr(m))
    typer.echo(json.dumps(m.spec.to_dict(), indent=2))
    typer.echo(
        f"residual hooks: {m.resid_hook(0)} .. {m.resid_hook(-1)}; "
        f"heads: {m.z_hook(0)} [batch pos head d_head]"
    )
    if is_run_dir(model):
        typer.echo("checkpoints: " + ", ".join(c.revision for c in list_checkpoints(model)))
    origin = m.spec.origin
    if origin.get("cache_folder"):
        typer.echo(f"weights: {origin.get('note', '')}; converted folder (tvlens cache): "
                   f"{origin['cache_folder']}")  # fmt: skip
    bos = m.spec.prompt_bos
    typer.echo(f"prompts start with: {bos.get('token') or 'nothing'} ({bos.get('reason', '')})")


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
