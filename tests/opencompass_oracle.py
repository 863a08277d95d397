"""OpenCompass 0.4.1's own code, imported without its dependency swamp, as the tests' oracle.

OpenCompass's package ``__init__``s import every dataset, model and evaluator it has (hundreds of
third-party packages). The modules that render a prompt and score an answer need only
``mmengine-lite``, ``datasets``, ``transformers`` and (IFEval) ``langdetect``/``nltk``/
``immutabledict``. :func:`load` registers OpenCompass's packages as empty shells whose names
resolve lazily from their submodules, so ``import opencompass.datasets.gsm8k`` runs that file and
what it imports, not the whole package.

:func:`render_chat` runs OpenCompass's own inference path (``OpenICLInferTask._inference``:
the dataset config's loader, prompt template, retriever and ``GenInferencer``) over a dataset
config and a model config, with a ``HuggingFacewithChatTemplate`` whose tokenizer and model are
recorders: what comes back is, per item, the chat messages OpenCompass hands to
``tokenizer.apply_chat_template`` and the generation arguments (``max_new_tokens``) it asks for.
No model or tokenizer is loaded.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

#: The release the project mirrors; the tests skip (naming this command) without it.
INSTALL = (
    "pip install --no-deps opencompass==0.4.1 mmengine-lite==0.10.7 "
    "addict==2.4.0 termcolor==3.3.0 yapf==0.43.0"
)

#: Packages whose ``__init__`` would import everything; they become lazy shells.
_SHELLS = (
    "opencompass.utils",
    "opencompass.openicl",
    "opencompass.openicl.icl_evaluator",
    "opencompass.openicl.icl_retriever",
    "opencompass.openicl.icl_inferencer",
    "opencompass.models",
    "opencompass.datasets",
    "opencompass.datasets.IFEval",
    "opencompass.tasks",
)


def missing() -> str | None:
    """Why the oracle cannot run here (the tests' skip reason adds :data:`INSTALL`), or None."""
    for name in ("opencompass", "mmengine", "addict", "yapf", "termcolor"):
        if importlib.util.find_spec(name) is None:
            return f"OpenCompass 0.4.1 oracle not installed ({name} missing)"
    import opencompass

    if opencompass.__version__ != "0.4.1":
        return f"OpenCompass {opencompass.__version__} installed, the oracle is 0.4.1"
    return None


def _lazy_getattr(package: types.ModuleType):
    """Module ``__getattr__`` for a shell: find ``name`` the way the real ``__init__`` would,
    importing only the submodule that defines it."""
    init = Path(package.__path__[0]) / "__init__.py"
    tree = ast.parse(init.read_text(encoding="utf-8")) if init.is_file() else ast.Module([], [])
    explicit: dict[str, str] = {}
    starred: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            for alias in node.names:
                if alias.name == "*":
                    starred.append(node.module)
                else:
                    explicit[alias.asname or alias.name] = node.module

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        candidates = [explicit[name]] if name in explicit else []
        for module in starred:
            path = Path(package.__path__[0], *module.split("."))
            source = path.with_suffix(".py") if path.with_suffix(".py").is_file() else None
            if source is None and (path / "__init__.py").is_file():
                source = path / "__init__.py"
            if source and name in source.read_text(encoding="utf-8"):
                candidates.append(module)
        for module in candidates:
            sub = importlib.import_module(f"{package.__name__}.{module}")
            if hasattr(sub, name):
                value = getattr(sub, name)
                setattr(package, name, value)
                return value
        raise AttributeError(f"module {package.__name__!r} has no attribute {name!r}")

    return __getattr__


def load() -> types.ModuleType:
    """Register the lazy shells (once) and return the ``opencompass`` package."""
    import opencompass

    root = Path(opencompass.__file__).parent
    for name in _SHELLS:
        if name in sys.modules:
            continue
        path = root.joinpath(*name.split(".")[1:])
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(path)]
        shell = types.ModuleType(name)
        shell.__spec__, shell.__path__, shell.__package__ = spec, [str(path)], name
        shell.__file__ = str(path / "__init__.py")
        sys.modules[name] = shell
        parent, _, child = name.rpartition(".")
        setattr(sys.modules[parent], child, shell)
        shell.__getattr__ = _lazy_getattr(shell)  # type: ignore[method-assign]
    return opencompass


def config_root() -> Path:
    """``opencompass/configs`` of the installed release."""
    return Path(load().__file__).parent / "configs"


def read_config(relative: str) -> Any:
    """An OpenCompass config file (under ``opencompass/configs``) through mmengine, as
    OpenCompass reads it (``read_base`` pointers followed)."""
    load()
    from mmengine.config import Config

    return Config.fromfile(str(config_root() / relative))


#: The HF model configs of the paper's two models in that release.
MODEL_CONFIGS = {
    "llama-3.1-8b-instruct": "models/hf_llama/hf_llama3_1_8b_instruct.py",
    "qwen2.5-0.5b-instruct": "models/qwen2_5/hf_qwen2_5_0_5b_instruct.py",
}


class _RecordingTokenizer:
    """Stands in for the checkpoint's tokenizer: records the messages OpenCompass renders."""

    pad_token_id = 0
    eos_token = None

    def __init__(self, log: list) -> None:
        self.log = log

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=False, **kw):
        import copy

        self.log.append({"messages": copy.deepcopy(messages), "gen_prompt": add_generation_prompt})
        return repr(messages)

    def batch_encode_plus(self, texts, **kwargs):
        import torch

        n = len(texts)
        return {
            "input_ids": torch.zeros((n, 1), dtype=torch.long),
            "attention_mask": torch.ones((n, 1), dtype=torch.long),
        }

    def encode(self, text, add_special_tokens=False):
        return [0]

    def batch_decode(self, outputs, **kwargs):
        return [""] * len(outputs)


class _RecordingModel:
    device = "cpu"

    def __init__(self, log: list) -> None:
        self.log = log

    def generate(self, input_ids=None, attention_mask=None, **generation_kwargs):
        import torch

        for _ in range(len(input_ids)):
            self.log.append(
                {k: v for k, v in generation_kwargs.items() if k != "stopping_criteria"}
            )
        return torch.zeros((len(input_ids), 2), dtype=torch.long)


def render_chat(dataset_config: str, model_config: str, dataset_path: str, tmp: Path) -> list:
    """Per item: ``{"messages": [...], "max_new_tokens": n}`` as OpenCompass's inference task
    (``OpenICLInferTask``) asks them of ``model_config``'s model for ``dataset_config``'s dataset
    read from ``dataset_path`` (in OpenCompass's own file format)."""
    load()
    from opencompass.models import huggingface_above_v4_33 as hf
    from opencompass.tasks.openicl_infer import OpenICLInferTask

    chats: list = []
    gens: list = []

    class Recording(hf.HuggingFacewithChatTemplate):
        def _load_tokenizer(self, path, kwargs, pad_token_id=None):
            self.tokenizer = _RecordingTokenizer(chats)

        def _load_model(self, path, kwargs, peft_path=None, peft_kwargs=None):
            self.model = _RecordingModel(gens)

        def _get_potential_stop_words(self, path):
            return []  # the checkpoint's eos tokens: they stop generation, not shape the prompt

    datasets_cfg = read_config(dataset_config)
    (dataset,) = next(v for k, v in datasets_cfg.items() if k.endswith("_datasets"))
    dataset = dataset.copy()
    dataset["path"] = dataset_path
    (model,) = read_config(model_config).models
    model = model.copy()
    model["type"] = Recording
    from mmengine.config import ConfigDict

    cfg = ConfigDict(models=[model], datasets=[[dataset]], work_dir=str(tmp))
    real = hf._get_possible_max_seq_len
    hf._get_possible_max_seq_len = lambda max_seq_len, path: max_seq_len or 32768
    try:
        OpenICLInferTask(cfg).run()
    finally:
        hf._get_possible_max_seq_len = real
    assert len(chats) == len(gens)
    return [
        {"messages": c["messages"], "max_new_tokens": g.get("max_new_tokens")}
        for c, g in zip(chats, gens, strict=True)
    ]


def _rows(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def write_dataset(task: str, data_dir: Path, out: Path) -> str:
    """The project's items of ``task`` (official schema, under ``data_dir``) in the file format
    OpenCompass's loader for it reads; returns the ``path`` to give the dataset config."""
    import csv
    import json
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    if task == "gsm8k":
        for split in ("train", "test"):
            shutil.copy(data_dir / f"gsm8k/{split}.jsonl", out / f"{split}.jsonl")
        return str(out)
    if task == "winogrande":
        shutil.copy(data_dir / "winogrande/validation.jsonl", out / "dev.jsonl")
        return str(out)
    if task == "triviaqa":  # trivia-{dev,test}.qa.csv: question \t repr(list of answers)
        rows = _rows(data_dir / "triviaqa/validation.jsonl")
        for split in ("dev", "test"):
            with open(out / f"trivia-{split}.qa.csv", "w", encoding="utf-8", newline="") as fh:
                writer = csv.writer(fh, delimiter="\t")
                for row in rows:
                    writer.writerow([row["question"], repr(list(row["answer"]["aliases"]))])
        return str(out)
    if task == "hellaswag":  # hellaswag.jsonl: lm-eval's processed docs (query, choices, gold)
        import datasets
        from lm_eval.tasks.hellaswag.utils import process_docs

        docs = process_docs(
            datasets.Dataset.from_list(_rows(data_dir / "hellaswag/validation.jsonl"))
        )
        with open(out / "hellaswag.jsonl", "w", encoding="utf-8") as fh:
            for doc in docs:
                fh.write(json.dumps({k: doc[k] for k in ("query", "choices", "gold")}) + "\n")
        return str(out / "hellaswag.jsonl")
    if task in ("humaneval", "ifeval"):
        src = {"humaneval": "humaneval/test.jsonl", "ifeval": "ifeval/train.jsonl"}[task]
        shutil.copy(data_dir / src, out / "data.jsonl")
        return str(out / "data.jsonl")
    raise KeyError(task)


def dataset(dataset_config: str, dataset_path: str) -> tuple[Any, Any]:
    """(test split as OpenCompass's loader and reader build it, the config's ``eval_cfg``)."""
    load()
    from opencompass.utils.build import build_dataset_from_cfg

    cfg = read_config(dataset_config)
    (ds_cfg,) = next(v for k, v in cfg.items() if k.endswith("_datasets"))
    ds_cfg = ds_cfg.copy()
    ds_cfg["path"] = dataset_path
    return build_dataset_from_cfg(ds_cfg), ds_cfg["eval_cfg"]


def postprocess(eval_cfg: Any, text: str, key: str = "pred_postprocessor") -> str:
    """The config's post-processor (``pred_postprocessor`` or ``dataset_postprocessor``)."""
    if key not in eval_cfg:
        return text
    kwargs = dict(eval_cfg[key])
    proc = kwargs.pop("type")
    return proc(text, **kwargs)


def evaluator(eval_cfg: Any) -> Any:
    """The config's evaluator, built as OpenCompass builds it."""
    kwargs = dict(eval_cfg["evaluator"])
    return kwargs.pop("type")(**kwargs)
