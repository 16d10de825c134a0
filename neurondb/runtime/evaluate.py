"""Accuracy of a model with a soft prompt on a labelled split, through the extraction path.

``evaluate(lm, prompt, data)`` is what training uses for its validation score, transfer for
every cell of its matrix, and what suppression can reuse with hooks installed on ``lm.model``.
Batches are formed as ``neurondb extract`` forms them (longest first, same batch size), so
the logits equal those an extraction with the same prompt stores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from neurondb.errors import TuneError, arg
from neurondb.runtime.batches import iter_batches
from neurondb.runtime.data import LoadedData
from neurondb.runtime.model import LoadedModel
from neurondb.runtime.prompt import SoftPrompt
from neurondb.runtime.reader import LabelReader, batch_logits, check_labels, prompt_readout
from neurondb.runtime.templates import Template, resolve_labels
from neurondb.store.manifest import model_fingerprint


@dataclass
class Evaluation:
    """Scores of one split, in the data's example order.

    ``accuracy`` in [0, 1]; ``predictions`` int64 ``[n]``; ``logits`` float32 ``[n, C]``;
    ``loss`` the mean cross-entropy (nats) of the gold labels.
    """

    accuracy: float
    predictions: np.ndarray
    logits: np.ndarray
    loss: float

    @property
    def n(self) -> int:
        return int(self.predictions.shape[0])


def check_prompt(lm: LoadedModel, prompt: SoftPrompt) -> None:
    """Refuse a prompt made for another model: its width must be the model's embedding
    width, and a recorded model fingerprint (``meta["model_fingerprint"]``) must match."""
    d = int(lm.model.get_input_embeddings().weight.shape[1])
    where = prompt.source or "the prompt"
    if prompt.d_model != d:
        raise TuneError(f"{where} has width {prompt.d_model} but {lm.name} embeds in {d}: it was "
                        "made for another model")
    fp = prompt.meta.get("model_fingerprint")
    if fp and fp != model_fingerprint(lm.model):
        raise TuneError(f"{where} was tuned on another model ({prompt.meta.get('model', '?')}, "
                        f"fingerprint {str(fp)[:12]}) than {lm.name}; tune a prompt for this model")
    if prompt.has_head and not lm.strategy.uses_head:
        raise TuneError(f"{where} carries a classification head but {lm.name} was loaded with "
                        f"readout {lm.readout!r}; load it with readout 'head'")
    if lm.strategy.uses_head and not prompt.has_head:
        raise TuneError(f"readout 'head' reads the label through a head, and {where} has none; "
                        "use a prompt made by `neurondb tune` for an encoder without an LM head")


def readout_for(lm: LoadedModel, prompt: SoftPrompt | None, template: str | Template | None = None,
                verbalizer: list[str] | None = None, max_length: int | None = None) -> LabelReader:
    """The readout a prompt was tuned with (template/verbalizer/pool/text token limit from its
    meta, by :func:`neurondb.runtime.templates.resolve_labels`), with ``template``/
    ``verbalizer``/``max_length`` overriding; ``{text}`` when nothing says otherwise."""
    src = template.source if isinstance(template, Template) else template
    spec = resolve_labels(None, template=src, verbalizer=verbalizer,
                          prompt_meta=prompt.meta if prompt is not None else None)
    return prompt_readout(lm, spec.template, spec.verbalizer, prompt, max_length=max_length)


def evaluate(lm: LoadedModel, prompt: SoftPrompt | None, data: LoadedData, *,
             template: str | Template | None = None, verbalizer: list[str] | None = None,
             readout: LabelReader | None = None, batch_size: int = 32,
             check_model: bool = True) -> Evaluation:
    """Run ``lm`` with ``prompt`` over ``data`` and score the label logits.

    ``readout`` (from :func:`readout_for`) skips rebuilding the encoder; otherwise the
    template/verbalizer come from the arguments, then the prompt's meta.
    ``check_model`` refuses a prompt made for another model (:func:`check_prompt`).
    """
    if batch_size < 1:
        raise TuneError(f"{arg('batch_size')} must be at least 1")
    if prompt is not None and check_model:
        check_prompt(lm, prompt)
    ro = readout or readout_for(lm, prompt, template, verbalizer)
    what = "verbalizer" if ro.verb_ids else f"{lm.readout} readout"
    check_labels(data, ro.n_classes, what)
    logits = np.zeros((len(data), ro.n_classes), dtype=np.float32)
    with torch.inference_mode():
        for ids, batch in iter_batches(ro.encoder, data.texts, batch_size=batch_size):
            logits[ids] = batch_logits(lm, ro, batch, prompt).cpu().numpy()
    pred = logits.argmax(-1).astype(np.int64)
    lt = torch.from_numpy(logits)
    loss = float(torch.nn.functional.cross_entropy(lt, torch.from_numpy(data.labels)))
    return Evaluation(accuracy=float((pred == data.labels).mean()), predictions=pred,
                      logits=logits, loss=loss)
