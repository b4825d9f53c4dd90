"""The demo's report: ``README.md`` beside the figures, saying what each figure shows with the
numbers of this run (and only what the numbers say), and :class:`DemoResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tvlens.compare.demo_step import _atv_report
from tvlens.errors import TVLensError
from tvlens.extraction.registry import get_extraction_method, method_object
from tvlens.plotting import SavedFigure
from tvlens.results import Result

# figures/README.md: the text after this line is not the demo's and is kept when it is rewritten.
KEEP_MARKER = "<!-- Not written by tvlens demo: kept when the demo rewrites this file. -->"


@dataclass
class DemoResult(Result):
    """What :func:`run_demo` returns and writes as ``demo.json`` (``DemoResult.load`` reads it
    back): the folders, the figures written and ``summary``, the numbers behind them (the
    JSON's top level). ``to_dataframe()``: the task-vector table of the final checkpoint."""

    run_dir: Path
    figures_dir: Path
    figures: dict[str, SavedFigure] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return self.summary

    def to_dataframe(self):
        return pd.DataFrame(self.summary.get("task_vectors", {}).get("table", []))

    def plot(self, **kwargs):
        raise TVLensError(
            f"A DemoResult has no single figure: the demo wrote {len(self.figures)} in "
            f"{str(self.figures_dir)!r} (its .figures); to_dataframe() gives the table to plot."
        )

    def __str__(self) -> str:
        s = self.summary
        return "\n".join([
            f"run: {self.run_dir}  figures: {self.figures_dir}  ({s['seconds']} s)",
            f"ICL accuracy 0.9 first reached at step {s['first_step_with_icl_accuracy_0.9']};"
            f" final accuracy {s['final_icl_evaluation']['mean_first_token']:.3f}",
            *(f"  {name}: {f.png or f.html}" for name, f in self.figures.items()),
        ])  # fmt: skip


def top_position_by_layer(result) -> list[dict]:
    """For each layer of a ``[layer, pos]`` patching result, the position whose patch has the
    largest effect: its label, its role in the prompt and the effect. Role: ``last token``, a
    ``demonstration label`` (a position right after the separator the prompt ends with, e.g.
    ``->``: where each demonstration's answer sits) or ``other``."""
    effect = result.effect()
    words = [lab.split(" ", 1)[-1] for lab in result.pos_labels]
    last = effect.shape[1] - 1
    out = []
    for i, layer in enumerate(result.layers):
        pos = int(effect[i].argmax())
        if pos == last:
            role = "last token"
        elif pos > 0 and words and words[pos - 1] == words[last]:
            role = "demonstration label"
        else:
            role = "other"
        label = words[pos] if words else str(pos)
        out.append({"layer": layer, "pos": pos, "label": label, "role": role,
                    "effect": float(effect[i, pos])})  # fmt: skip
    return out


def resid_summary(by_layer: list[dict]) -> str:
    """One sentence on where the largest residual patch sits, only where the numbers show a
    pattern: demonstration labels in the lower blocks, then the last token (or the last token
    everywhere); empty otherwise."""
    roles = [r["role"] for r in by_layer]
    if all(r == "last token" for r in roles):
        return "The last token has the largest effect in every block."
    if "last token" not in roles:
        return ""
    b = roles.index("last token")
    if (
        b > 0
        and all(r == "demonstration label" for r in roles[:b])
        and all(r == "last token" for r in roles[b:])
    ):
        lo, hi = by_layer[0]["layer"], by_layer[b - 1]["layer"]
        blocks = f"block {lo}" if lo == hi else f"blocks {lo}–{hi}"
        return (
            f"The largest effect sits at a demonstration label in {blocks} and at the last "
            f"token from block {by_layer[b]['layer']} on: the task information moves from the "
            "demonstrations to the last token, where the task vector is read."
        )
    return ""


def _method_sentence(name: str) -> str:
    """How an extraction method builds its vector and writes it in, from its class."""
    m = method_object(name)
    how = m.how_written()
    return (f"The {m.title or m.name} ({m.description}) {how} the residual at the last "
            "token of zero-shot test prompts")  # fmt: skip


def write_report(res: DemoResult, ck: list[dict]) -> None:
    s = res.summary
    cfg = s["config"]
    k = cfg["k"]
    tvs = s["task_vectors"]["summary"]
    chosen = "; ".join(
        f"{get_extraction_method(m).label} {tvs[m]['task_vector']:.2f} ({tvs[m]['recovered']:.0%} "
        "of ICL)"
        for m in s["task_vectors"]["config"]["methods"]
    )
    by_demo = ", ".join(f"{x:.2f}" for x in s["final_accuracy_by_demo"])
    te = s["task_encoding"]
    td_last = ", ".join(f"{x:.2f}" for x in te["td_by_layer"][-1])
    lines = [
        "# tvlens demo figures",
        "",
        "Written by `tvlens demo` (see `demo.json` for the configuration and numbers).",
        f"Model: {cfg['arch']} with {cfg['n_layers']} layers, d_model {cfg['d_model']}, "
        f"{cfg['n_heads']} heads, trained from scratch on the `{cfg['suite']['name']}` suite "
        f"({', '.join(f'{a}={b}' for a, b in cfg['suite'].items() if a != 'name')}), "
        f"{k} demonstrations per prompt, {cfg['steps']} steps"
        + (
            f", with the task-vector prompting loss (weight {cfg['tv_loss_weight']}, block "
            f"{cfg['tv_loss_layer']}; see docs/guides/training.md)"
            if cfg.get("tv_loss_weight")
            else ""
        )
        + "; checkpoints at "
        f"{', '.join(str(x) for x in s['checkpoint_steps'])}.",
        "",
        "## icl_over_checkpoints.png",
        "![ICL accuracy over checkpoints](icl_over_checkpoints.png)",
        "",
        "Query accuracy (first answer token) of every task at every checkpoint (thin lines), "
        "their mean (black) and the loss on the answer tokens (dotted, right axis). The "
        + (
            f"model reaches mean accuracy 0.9 at step {s['first_step_with_icl_accuracy_0.9']}"
            if s["first_step_with_icl_accuracy_0.9"] is not None
            else "model does not reach mean accuracy 0.9 at any checkpoint"
        )
        + f" and ends at {s['final_icl_accuracy_training_eval']:.2f}. The final checkpoint, "
        "loaded through "
        "`load_model` and scored by `evaluate_icl` on fresh prompts, gets "
        f"{s['final_icl_evaluation']['mean_first_token']:.2f}.",
        "",
        "## accuracy_by_demo.png",
        "![Accuracy by demonstration index](accuracy_by_demo.png)",
        "",
        "Accuracy on the answer of each demonstration (index i has i examples before it) and "
        "of the query. The first answer has no context to tell which task the prompt is. "
        f"Final accuracies by index: {by_demo}." + _by_demo_summary(s["final_accuracy_by_demo"]),
        "",
        "## layer_sweep.png",
        "![Task-vector accuracy by layer](layer_sweep.png)",
        "",
        "Each task is split into train / dev / test queries. "
        + " ".join(f"{_method_sentence(m)}." for m in s["task_vectors"]["config"]["methods"])
        + " Lines: mean test accuracy over tasks for each layer; dashed: ICL and zero-shot "
        f"accuracy on the same queries (ICL {tvs['icl']:.2f}, zero-shot {tvs['zero_shot']:.2f}). "
        f"At the layer chosen on dev queries: {chosen}.",
        "",
        "## head_aie.png",
        "![AIE per head](head_aie.png)",
        "",
        "Average indirect effect of each head (layer × head), averaged over tasks: the gain in "
        "probability of the correct answer when the head's last-token output on shuffled-label "
        "prompts is replaced by its mean on clean prompts. Per-task table: `task_vectors.md`.",
        "",
        *_patching_report(s["patching"]),
        "## td_by_layer.png",
        "![Task decodability by layer](td_by_layer.png)",
        "",
        "Task decodability (Han et al. 2025): the residual after each layer at the last query "
        f"token of {te['n_prompts']} prompts per task plus the Null task (random answers), "
        "each classified by its 10 nearest other points; one line per checkpoint "
        f"({', '.join(str(x) for x in te['steps'])}). Final checkpoint by layer: {td_last}; "
        f"peak layer {te['peak_layer']}.",
        "",
        "## emergence.png",
        "![Encoding and decoding over training](emergence.png)",
        "",
        "Per task over the same checkpoints: TD at the peak layer (top; black: all tasks), "
        "the query loss (middle) and accuracy (bottom): whether encoding (TD) and decoding "
        "(accuracy) rise together. Numbers: `runs/.../emergence.json`.",
        "",
        *_atv_report(s["atv"]),
    ]
    write_readme(res.figures_dir / "README.md", "\n".join(lines))


def write_readme(path: Path, report: str) -> None:
    """Write the demo's ``report`` to ``path``, keeping what an existing file holds after
    :data:`KEEP_MARKER` (sections of the committed ``figures/README.md`` the demo does not
    write, e.g. ``pretrained/``)."""
    kept = path.read_text().partition(KEEP_MARKER)[2] if path.is_file() else ""
    path.write_text(report + (f"\n{KEEP_MARKER}{kept}" if kept.strip() else "\n"))


def _by_demo_summary(acc: list[float]) -> str:
    """What the accuracies by demonstration index say, when they say it: the answers with
    demonstrations before them clearly above the first one (by more than 0.2)."""
    if len(acc) < 2 or min(acc[1:]) - acc[0] <= 0.2:
        return ""
    return (
        f" Every answer with demonstrations before it ({min(acc[1:]):.2f}–{max(acc[1:]):.2f}) "
        f"is well above the first ({acc[0]:.2f}): the model infers the task in context."
    )


def _patching_report(p: dict) -> list[str]:
    def where(t: dict) -> str:
        return ", ".join(f"{k} {v}" for k, v in t.items() if k != "effect")

    top = p["heads_top"][0]
    rtop = p["resid_top"][0]
    by_layer = "; ".join(
        f"block {r['layer']}: `{r['label']}` ({r['role']}, {r['effect']:+.3f})"
        for r in p["resid_top_by_layer"]
    )
    return [
        "## patching_heads.png, patching_heads_attribution.png",
        "![Head patching](patching_heads.png)",
        "",
        f"Activation patching on {p['n_prompts_heads']} prompts: each head's output (`hook_z`, "
        "all positions) from clean prompts patched into the same prompts with shuffled "
        "demonstration labels; colour: the normalized effect on the probability of the correct "
        f"answer (0 = corrupted run, {p['heads_corrupted']:.2f}; 1 = clean run, "
        f"{p['heads_clean']:.2f}). Largest: {where(top)} ({top['effect']:+.3f}). "
        "`patching_heads_attribution.png` is the attribution-patching estimate (2 forward + 1 "
        "backward pass); its Spearman correlation with exact patching is "
        f"{p['heads_spearman_attribution_vs_exact']:.2f}.",
        "",
        "## patching_resid.png",
        "![Residual patching by position](patching_resid.png)",
        "",
        f"The residual stream entering each block, patched one position at a time "
        f"({p['n_prompts_resid']} prompts). Largest: {where(rtop)} ({rtop['effect']:+.3f}). "
        f"Position with the largest effect in each block: {by_layer}. "
        + resid_summary(p["resid_top_by_layer"]),
        "",
    ]
