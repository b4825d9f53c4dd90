"""Each method family owns its settings (issue 30): CompareConfig holds the common fields and
one block per family (``vector``, ``peft``, ``atv``). The presets' effective settings are the
ones they had as flat fields (``data/flat_presets.json``: what the flat configs wrote), old
flat names still work as overrides, a config written as JSON loads back, a comparison saved
with flat keys (the committed ``figures/atv_compare/cpu_v3``) resumes without recomputing a
cell, a result saved with a flat config loads into the blocks, and ``tvlens atv compare``
offers the same options."""

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tvlens.compare.config import COMMON, PRESETS, CompareConfig
from tvlens.compare.options import (
    FLAT,
    OPTIONS,
    ATVOptions,
    MethodOptions,
    PeftOptions,
    VectorOptions,
)
from tvlens.compare.registry import METHODS
from tvlens.errors import ConfigError, TVLensError

ROOT = Path(__file__).resolve().parents[2]
# Every preset's CompareConfig.to_dict() as the flat config wrote it (and the default config).
FLAT_PRESETS = json.loads((Path(__file__).parent / "data" / "flat_presets.json").read_text())


def _flat(cfg: CompareConfig) -> dict:
    """``cfg`` as the flat config's fields: the common ones and each block's by its old name."""
    d = cfg.to_dict()
    for old, (family, name) in FLAT.items():
        d[old] = d[family][name]
    return {k: v for k, v in d.items() if k not in OPTIONS}


# What issue 32 changed on purpose since the flat record: patience 5 (was 2) and 10,000
# bootstrap resamples (was 1,000) by default, and the report's new settings (TOST margin,
# bootstrap levels); a preset that sets patience or bootstrap itself keeps its value.
ISSUE_32 = {"equivalence_margin": 0.05, "bootstrap_levels": ["task", "query", "seed"]}
ISSUE_32_DEFAULTS = {"patience": (2, 5), "bootstrap": (1000, 10_000)}


def _as_today(name: str, old: dict) -> dict:
    new = {**old, **ISSUE_32}
    if old["methods"] == [m for m in METHODS if "_affine_" not in m]:  # every method then
        new["methods"] = list(METHODS)  # ... and the static affine rows since issue 32
    for k, (was, now) in ISSUE_32_DEFAULTS.items():
        if old[k] == was and k not in PRESET_SETS.get(name, ()):
            new[k] = now
    return new


PRESET_SETS = {"cpu": ("patience",)}  # set in the preset itself (the committed cpu_v3 run)


@pytest.mark.parametrize("name", ["default", "tiny", "cpu", "gpu"])
def test_presets_have_their_flat_settings(name):
    cfg = CompareConfig() if name == "default" else PRESETS[name]
    old = _as_today(name, FLAT_PRESETS[name])
    assert _flat(cfg) == old  # every setting, common or a family's, as it was
    assert CompareConfig.upgrade(old) == cfg.to_dict()  # what a flat config.json upgrades to
    assert CompareConfig(**json.loads(json.dumps(cfg.to_dict()))) == cfg  # config.json loads
    omitted = {"sweep_epochs", "seed_train_queries", "sweep_widen", "sweep_joint"}  # at default
    assert set(old) - set(FLAT) - omitted == set(COMMON) - omitted


def test_overrides_by_block_and_by_flat_name():
    tiny = PRESETS["tiny"]
    cfg = tiny.with_overrides(lora_rank=3, tv_k=2, atv={"scale": 0.3}, n_train=10)
    assert cfg.peft == PeftOptions(lrs=[2e-3, 5e-3], lora_rank=3, prefix_tokens=4)
    assert cfg.vector.k == 2 and cfg.vector.n_extract == tiny.vector.n_extract
    assert cfg.atv.scale == 0.3 and cfg.atv.lrs == tiny.atv.lrs and cfg.n_train == 10
    assert tiny.with_overrides(atv=ATVOptions()).atv == ATVOptions()  # an object replaces
    assert tiny.with_overrides(lora_rank=None) == tiny  # None: keep
    with pytest.warns(DeprecationWarning, match="fv_top_heads= is renamed top_k_heads="):
        assert tiny.with_overrides(fv_top_heads=3).vector.top_k_heads == 3
    for bad, says in (
        ({"peft": {"rank": 3}}, r"peft has no option \['rank'\]; its options are"),
        ({"atv_scale": 5.0}, r"atv.scales \(atv_scales\) must hold atv.scale \(5.0\)"),
        ({"peft_lrs": []}, r"peft.lrs \(peft_lrs\) needs at least one learning rate"),
        ({"nope": 1}, r"Unknown compare option\(s\) \['nope'\]"),
    ):
        with pytest.raises(ConfigError, match=says) as e:
            tiny.with_overrides(**bad)
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="vector must be a VectorOptions or a dict"):
        CompareConfig(vector=3)
    assert CompareConfig(vector={"k": 3}).vector == VectorOptions(k=3)
    cfg = CompareConfig()
    assert cfg.options_for(ATVOptions) is cfg.atv and cfg.options_for(VectorOptions) is cfg.vector
    with pytest.raises(TVLensError, match="no block of MethodOptions"):
        cfg.options_for(MethodOptions)


def test_committed_flat_comparison_resumes_without_recomputing(tmp_path):
    """``figures/atv_compare/cpu_v3`` was saved with flat settings (``data/
    cpu_v3_flat_config.json``): its fingerprint matches the ``cpu`` preset's, and every cell
    the preset asks for is there (none recomputed)."""
    from tvlens.compare.registry import get_method_spec
    from tvlens.compare.run import SELECTED, Cell, _check_out, cell_path, compare_cells, selection

    committed = ROOT / "figures/atv_compare/cpu_v3"
    # its config.json as the flat config wrote it (today's code has since rewritten it)
    flat = Path(__file__).parent / "data" / "cpu_v3_flat_config.json"
    saved = json.loads(flat.read_text())
    assert "lora_rank" in saved["fingerprint"] and "peft" not in saved["fingerprint"]
    out = tmp_path / "cpu_v3"
    out.mkdir()
    shutil.copy(flat, out / "config.json")
    shutil.copytree(committed / "cells", out / "cells")
    # its grids were widened in place since, and ATV's swept jointly (``--sweep-widen``,
    # ``--sweep-joint``: outside the fingerprint)
    now = json.loads((committed / "config.json").read_text())["config"]
    widen, joint = now["sweep_widen"], now["sweep_joint"]
    assert joint is True
    cfg = PRESETS["cpu"].with_overrides(target=saved["config"]["target"], sweep_widen=widen,
                                        sweep_joint=joint)  # fmt: skip
    assert _check_out(out, cfg) == cfg  # the same configuration: no error
    assert [str(c) for c in compare_cells(cfg) if not cell_path(out, c).is_file()] == []
    swept = [m for m in cfg.methods if len(get_method_spec(m).variants(cfg)) > 1]
    assert len(swept) >= 6
    for m in swept:  # the variant each reported cell recorded, chosen again from the cells
        cell = json.loads(cell_path(out, Cell(m, SELECTED, 0)).read_text())
        assert selection(cfg, out, m)["label"] == cell["info"]["selection"]["label"], m
    for changed in ({"lora_rank": 4}, {"vector": {"k": 4}}, {"atv_scale": 1e-3}):
        with pytest.raises(TVLensError, match="another configuration"):
            _check_out(out, cfg.with_overrides(**changed))
    # every reported cell holds the variant its widened sweep chooses (none stale); every
    # chosen rate is interior, so widening further plans no new cell
    from tvlens.compare.setup import cell_state, sweep_variants

    assert {cell_state(cfg, out, c) for c in compare_cells(cfg, out)} == {"done"}
    wide = cfg.with_overrides(sweep_widen=widen + 1)
    assert [c for c in compare_cells(wide, out) if cell_state(wide, out, c) != "done"] == []
    # on the preset's own grid, the methods whose choice the widening changed read stale
    narrow = cfg.with_overrides(sweep_widen=0)
    stale = {c.method for c in compare_cells(narrow, out) if cell_state(narrow, out, c) == "stale"}
    assert stale == {"prefix", "atv_r1", "lora_r1"}
    # the joint grid found no better pair than the cross: the cross chooses the same ATV
    cross = cfg.with_overrides(sweep_joint=False)
    assert selection(cross, out, "atv")["label"] == selection(cfg, out, "atv")["label"]
    assert len(sweep_variants(cfg, "atv", out)) == 12 > len(sweep_variants(cross, "atv", out))


def test_a_result_saved_with_a_flat_config_loads_into_the_blocks():
    from tvlens.results import decode, encode

    saved = encode(PRESETS["tiny"])
    saved["fields"] = {**_as_today("tiny", FLAT_PRESETS["tiny"]), "sweep_epochs": None}
    saved["fields"]["fv_top_heads"] = saved["fields"].pop("top_k_heads")  # an older name too
    back = decode(json.loads(json.dumps(saved)))
    assert back == PRESETS["tiny"] and not hasattr(back, "lora_rank")
    assert decode(encode(PRESETS["cpu"])) == PRESETS["cpu"]


# `tvlens atv compare --help`'s options before the blocks (the same flags, every one but the
# inputs defaulting to the preset's).
COMPARE_FLAGS = [
    "--out", "--device", "--workers", "--preset", "--target", "--in-domain", "--unseen",
    "--data-dir", "--data", "--n-train", "--n-test", "--seeds", "--methods", "--epochs",
    "--sweep-widen", "--sweep-joint", "--threads", "--help",
]  # fmt: skip


def test_cli_offers_the_same_options():
    from tvlens.cli.main import app

    res = CliRunner().invoke(app, ["atv", "compare", "--help"], terminal_width=200)
    assert res.exit_code == 0, res.output
    flags = re.findall(r"^\s+(--[\w-]+)(?:, (--[\w-]+))?", res.output, re.M)
    assert [f for pair in flags for f in pair if f] == COMPARE_FLAGS
    assert res.output.count("(default: the preset's)") == 11
    assert "[default: cpu]" in res.output and "[default: auto]" in res.output


def test_a_negative_sweep_widen_is_refused_in_one_line():
    from tvlens.errors import ConfigError

    with pytest.raises(ConfigError, match=r"sweep_widen must be >= 0, got -1"):
        PRESETS["tiny"].with_overrides(sweep_widen=-1)
