"""How a label is read from a model with a soft prompt: template, verbalizer, encoder, and
the ``[B, C]`` label logits of one batch.

Training, evaluation and transfer all go through :func:`batch_logits`, which runs
``neurondb.runtime.forward.model_inputs`` and ``label_logits`` — the very functions
extraction runs — so a tuned prompt gives the same logits everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from neurondb.errors import ExtractError, TuneError, arg, on_cli
from neurondb.runtime.data import LoadedData, require_examples
from neurondb.runtime.encode import Batch, Encoder
from neurondb.runtime.forward import label_logits, model_inputs
from neurondb.runtime.model import LoadedModel, text_max_length, verbalizer_ids
from neurondb.runtime.prompt import SoftPrompt
from neurondb.runtime.readouts import POOLS, READOUTS
from neurondb.runtime.templates import Template


@dataclass
class LabelReader:
    """Everything that turns examples into label logits for one model and prompt length.

    ``verb_ids``: first token id of each label word (verbalizer readouts), else None.
    ``n_classes``: C, the width of the label logits.
    """

    template: Template
    verbalizer: list[str]
    verb_ids: list[int] | None
    encoder: Encoder
    n_classes: int


def max_length_for(lm: LoadedModel, n_prompt: int, max_length: int | None = None) -> int:
    """Token limit of the text part: :func:`neurondb.runtime.model.text_max_length`, so that
    tuning, evaluation and extraction truncate alike."""
    try:
        return text_max_length(lm, n_prompt, max_length)
    except ExtractError as e:
        raise TuneError(str(e)) from e


def make_readout(lm: LoadedModel, template: str | Template, verbalizer: list[str] | None,
                 n_prompt: int, *, n_head_classes: int | None = None, pool: str = "mask",
                 max_length: int | None = None, min_words: int = 2,
                 need_logits: bool = True) -> LabelReader:
    """Check the template/verbalizer against the model's readout strategy and build the
    encoder: the one place that turns a readout into a class count and an encoder.

    ``n_head_classes``: C for a head readout (rows of the head weight). ``min_words``: the
    fewest label words a verbalizer readout accepts. ``need_logits=False`` accepts a readout
    without labels (``none``: activations only; C = 0).
    """
    tmpl = template if isinstance(template, Template) else Template(template)
    s = lm.strategy
    words = [w.strip() for w in (verbalizer or []) if w.strip()]
    verb_ids: list[int] | None = None
    if not s.gives_logits and need_logits:
        names = ", ".join(n for n, x in READOUTS.items() if x.gives_logits)
        raise TuneError(f"readout {s.name!r} gives no label logits; this needs one of {names}")
    if s.uses_verbalizer:
        if len(words) < min_words:
            raise TuneError(f"readout {s.name!r} needs a verbalizer"
                            + (" of at least two label words" if min_words > 1 else "")
                            + (": pass --verbalizer word0,word1,... (one per label, in label "
                               "order) or --task" if on_cli() else
                               ": pass verbalizer=['word0', 'word1', ...] (one per label, in "
                               "label order) or task"))
        verb_ids = verbalizer_ids(lm.tokenizer, words)
    else:
        words = []
    if s.uses_head:
        if pool not in POOLS:
            raise TuneError(f"{arg('pool')} must be one of {', '.join(POOLS)}, not {pool!r}")
        if pool == "mask" and not tmpl.has_mask:
            raise TuneError(f"the head reads the {{mask}} position but template {tmpl.source!r} "
                            f"has none; add {{mask}} to {arg('template')} or pass "
                            + ("--pool first|mean" if on_cli() else "pool='first' or 'mean'"))
        if not n_head_classes:
            raise TuneError(f"readout {s.name!r} needs the head saved with a tuned prompt: give "
                            f"{arg('prompt')} with a directory made by `neurondb tune`")
    if s.needs_mask and not tmpl.has_mask:
        raise TuneError(f"template {tmpl.source!r} has no {{mask}} slot, which the {s.name} "
                        "readout needs; add {mask} (e.g. '{text} It was {mask}.')")
    enc = Encoder(lm.tokenizer, tmpl, s.name, n_prompt, max_length_for(lm, n_prompt, max_length))
    return LabelReader(template=tmpl, verbalizer=words, verb_ids=verb_ids, encoder=enc,
                       n_classes=s.n_classes(lm.model, verb_ids, n_head_classes))


def prompt_readout(lm: LoadedModel, template: str | Template, verbalizer: list[str] | None,
                   prompt: SoftPrompt | None, *, max_length: int | None = None,
                   **kw) -> LabelReader:
    """:func:`make_readout` for inputs that carry ``prompt`` (or none): its length, its head's
    class count and pool, and, unless ``max_length`` is given, the text token limit it was
    tuned with (:attr:`SoftPrompt.max_length`): the one rule extraction, evaluation and
    scoring share. ``kw``: ``min_words``, ``need_logits``."""
    n_head = int(prompt.head_weight.shape[0]) if prompt is not None and prompt.has_head \
        else None
    if max_length is None and prompt is not None:
        max_length = prompt.max_length
    return make_readout(lm, template, verbalizer, prompt.n_tokens if prompt is not None else 0,
                        n_head_classes=n_head,
                        pool=prompt.pool if prompt is not None else "mask",
                        max_length=max_length, **kw)


def check_labels(data: LoadedData, n_classes: int, what: str, min_classes: int = 1) -> None:
    """One-line errors for data the readout cannot score: no examples, unlabelled rows,
    labels beyond the ``n_classes`` the verbalizer/head covers, fewer than ``min_classes``
    distinct labels (a one-class training set cannot be tuned on)."""
    where = f"the {data.split!r} split of {data.name}"
    require_examples(data, TuneError)
    if (data.labels < 0).any():
        raise TuneError(f"{where} has unlabelled examples; prompt tuning and evaluation need "
                        "a label for every example")
    top = int(data.labels.max())
    if top >= n_classes:
        raise TuneError(f"{where} has labels up to {top} but the {what} covers {n_classes} "
                        f"classes; give one {arg('verbalizer')} word per label")
    k = len(np.unique(data.labels))
    if k < min_classes:
        raise TuneError(f"{where} has a single class (label {top}); tuning needs examples of "
                        f"at least two classes (check {arg('label_field')} and "
                        f"{arg('max_examples')})")


def batch_logits(lm: LoadedModel, readout: LabelReader, batch: Batch,
                 prompt: SoftPrompt | None) -> torch.Tensor:
    """``[B, C]`` float32 label logits of one batch; differentiable in ``prompt.embeddings``
    and the head when the caller enables grad."""
    out = lm.model(**model_inputs(lm, batch, prompt))
    return label_logits(lm, out, batch, readout.verb_ids, prompt)
