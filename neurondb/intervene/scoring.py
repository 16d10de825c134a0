"""A model, its soft prompt and readout, and one labelled split, ready to be scored again and
again: the setting of every re-run of the model (suppression, ratio search, pruned
evaluation).

The label is read exactly as ``neurondb tune`` / ``neurondb extract`` read it (template,
verbalizer or head from the prompt's meta, else the task preset), through
:func:`neurondb.runtime.evaluate.evaluate`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from neurondb.arch import ModelShape
from neurondb.errors import arg, on_cli
from neurondb.intervene.errors import PruneError
from neurondb.runtime.data import LoadedData, load_data
from neurondb.runtime.evaluate import Evaluation, check_prompt, evaluate
from neurondb.runtime.model import LoadedModel, frozen, model_for
from neurondb.runtime.prompt import SoftPrompt, load_prompt
from neurondb.runtime.reader import LabelReader, prompt_readout
from neurondb.runtime.templates import resolve_labels


@dataclass
class Scorer:
    """Scores ``lm`` (with ``prompt``) on ``data``; ``readout`` is built once.

    ``data.labels`` int64 ``[n]``; :meth:`evaluate` returns accuracy in [0, 1].
    """

    lm: LoadedModel
    prompt: SoftPrompt | None
    data: LoadedData
    readout: LabelReader
    batch_size: int = 32

    def evaluate(self) -> Evaluation:
        """One pass over the split with whatever hooks are installed on ``lm.model``."""
        with frozen(self.lm):  # a caller's own model: evaluation mode, then as it was
            return evaluate(self.lm, self.prompt, self.data, readout=self.readout,
                            batch_size=self.batch_size, check_model=False)

    def shape(self) -> ModelShape:
        """FFN widths of the model being scored."""
        return self.lm.adapter.shape(self.lm.model)

    def with_model(self, model: torch.nn.Module) -> Scorer:
        """The same prompt, data and readout on another model of the same family (a pruned
        copy): ``model`` is moved to this scorer's device and frozen."""
        model.eval().to(self.lm.device)
        for p in model.parameters():
            p.requires_grad_(False)
        lm = LoadedModel(model=model, tokenizer=self.lm.tokenizer, adapter=self.lm.adapter,
                         readout=self.lm.readout, name=self.lm.name, revision=self.lm.revision,
                         device=self.lm.device)
        return Scorer(lm=lm, prompt=self.prompt, data=self.data, readout=self.readout,
                      batch_size=self.batch_size)

    def latency_ms(self, batch_size: int, repeats: int = 5, warmup: int = 1) -> float:
        """Median wall time (ms) of one forward pass over the first ``batch_size`` examples
        of the split (repeated if the split is smaller), prompt included. Pruned and unpruned
        scorers built from the same split run on the very same inputs."""
        texts = [self.data.texts[i % len(self.data)] for i in range(batch_size)]
        enc = self.readout.encoder
        ids = np.arange(batch_size)
        batch = enc.encode(ids, texts)
        from neurondb.runtime.reader import batch_logits

        times = []
        with torch.inference_mode():
            for i in range(warmup + repeats):
                if self.lm.device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                batch_logits(self.lm, self.readout, batch, self.prompt)
                if self.lm.device.type == "cuda":
                    torch.cuda.synchronize()
                if i >= warmup:
                    times.append(time.perf_counter() - t0)
        return float(np.median(times) * 1000.0)


def _model_from_prompt(prompt: SoftPrompt | None) -> str:
    if prompt is None:
        raise PruneError(f"give the model{' (MODEL)' if on_cli() else ''}, or a "
                         f"{arg('prompt')} made by `neurondb tune`, which names its model")
    path = prompt.meta.get("model_path")
    if path and Path(path).exists():
        return str(path)
    name = prompt.meta.get("model")
    if not name:
        raise PruneError(f"{prompt.source} does not name the model it was tuned on; give "
                         + ("MODEL" if on_cli() else "model"))
    return str(name)


def check_full_model(lm: LoadedModel, what: str) -> None:
    """Refuse a pruned export where ``what`` needs the full model's FFN widths."""
    spec = getattr(lm.model.config, "neurondb_prune", None)
    if isinstance(spec, dict) and spec:
        raise PruneError(f"{lm.name} is a pruned export (neurondb prune) with FFN widths that "
                         f"differ from the full model's; {what} needs the full model: give the "
                         "model the store was extracted from")


def prepare_scorer(model, data: str | LoadedData, *,
                   prompt: str | Path | SoftPrompt | None = None, split: str = "validation",
                   readout: str = "auto", template: str | None = None,
                   verbalizer: list[str] | None = None, task: str | None = None,
                   text_fields: list[str] | None = None, label_field: str = "label",
                   max_examples: int | None = None, batch_size: int = 32,
                   device: str = "auto", lm: LoadedModel | None = None,
                   tokenizer=None) -> Scorer:
    """Load what scoring needs, with one-line errors for every mismatch.

    ``model``: a name, a path or a loaded model (with ``tokenizer``); it defaults to the one
    the prompt was tuned on. Template, verbalizer and readout follow the one rule of
    :func:`neurondb.runtime.templates.resolve_labels`. ``lm``: an already loaded model.
    ``data``: a name, a path, a DataFrame or an already loaded split.
    """
    if batch_size < 1:
        raise PruneError(f"{arg('batch_size')} must be at least 1")
    sp = load_prompt(prompt) if isinstance(prompt, (str, Path)) else prompt
    has_head = bool(sp is not None and sp.has_head)
    name = data.name if isinstance(data, LoadedData) else (
        str(data) if isinstance(data, (str, Path)) else None)
    spec = resolve_labels(name, task=task, template=template, verbalizer=verbalizer,
                          readout=readout, prompt_meta=sp.meta if sp is not None else None,
                          prompt_has_head=has_head)
    if lm is None:
        lm = model_for(model if model is not None else _model_from_prompt(sp), tokenizer,
                       readout=spec.readout, device=device, has_head=has_head)
    if not lm.strategy.gives_logits or (lm.strategy.uses_head and sp is None):
        raise PruneError(f"{lm.name} has no LM head or classifier to read a label from; give "
                         f"{arg('prompt')} with a prompt made by `neurondb tune` (it carries a "
                         "head)")
    if sp is not None:
        check_prompt(lm, sp)
    loaded = data if isinstance(data, LoadedData) else load_data(
        data, split, None, text_fields, label_field, max_examples, spec.task)
    ro = prompt_readout(lm, spec.template, spec.verbalizer, sp)
    return Scorer(lm=lm, prompt=sp, data=loaded, readout=ro, batch_size=batch_size)
