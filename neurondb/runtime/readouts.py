"""How the label is read from a model: a registry of readout strategies (SPEC §7).

Each strategy knows, for its kind of model: whether it reads label words (a verbalizer) or
classes, how many classes it gives, where in the sequence the label is read, which
Transformers ``Auto`` class loads a model for it, how ``config.architectures`` announces it,
and how the ``[B, C]`` label logits come out of one forward pass. A new readout is one
:func:`register` call; the rest of neurondb asks the strategy and never compares readout
names (``docs/ARCHITECTURE.md``).

=============  =============================================  ===========================
name           label logits                                   read at
=============  =============================================  ===========================
``mlm``        verbalizer words at the ``<mask>``             the mask token
``causal``     verbalizer words as the next token             the last real token
``seq2seq``    verbalizer words at the first decoder step      decoder step 0 (T5)
``classifier`` the model's sequence-classification head        (the whole sequence)
``head``       a small linear head saved with a soft prompt    mask / first / mean pooling
``none``       none: activations only                         -
=============  =============================================  ===========================
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from neurondb.errors import ExtractError, UsageError, arg, given

if TYPE_CHECKING:  # torch only when a model runs; this module is imported by the light CLI
    import torch

#: where a ``head`` readout pools the last hidden state
POOLS = ("mask", "first", "mean")


@dataclass(frozen=True)
class HeadWeights:
    """A linear head ``[C, d_model]`` (+ bias ``[C]``) and where it pools (:data:`POOLS`)."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    pool: str = "mask"


class Readout(abc.ABC):
    """One way of reading the label. Subclasses set the class attributes and override
    :meth:`label_logits` (and :meth:`detect` to be chosen by ``auto``)."""

    name: ClassVar[str]
    #: reads label words through a verbalizer (one first token per label)
    uses_verbalizer: ClassVar[bool] = False
    #: reads through a head saved with a soft prompt (``neurondb tune`` trains it)
    uses_head: ClassVar[bool] = False
    #: gives label logits at all (``none`` does not: activations only)
    gives_logits: ClassVar[bool] = True
    #: the template's ``{mask}`` becomes the tokenizer's mask token; False cuts the template
    #: there (a causal LM reads the answer as the next token)
    fills_mask: ClassVar[bool] = True
    #: a mask token is required in every example (the label is read there)
    needs_mask: ClassVar[bool] = False
    #: the ``mask`` position kind always exists (read position known without a mask token)
    has_read_position: ClassVar[bool] = False
    #: needs an encoder-decoder model
    needs_encoder_decoder: ClassVar[bool] = False
    #: the Transformers Auto class that loads a model for this readout
    auto_class: ClassVar[str] = "AutoModel"
    #: reads the label through the model's pooler (a BERT classifier): a pooler missing from
    #: the checkpoint matters; to every other readout it is never read
    reads_pooler: ClassVar[bool] = False
    #: ``auto`` tries the strategies in this order (lower first)
    priority: ClassVar[int] = 100

    def detect(self, config, architecture: str) -> bool:
        """Whether ``config`` (with ``architectures[0]`` = ``architecture``) announces this
        readout; the first strategy by :attr:`priority` that says yes is ``auto``'s choice."""
        return False

    def n_classes(self, model, verb_ids: list[int] | None, n_head: int | None) -> int:
        """C, the width of the label logits: the label words, the head's rows (``n_head``),
        or the model's own classes."""
        if self.uses_verbalizer:
            return len(verb_ids or [])
        if self.uses_head:
            return int(n_head or 0)
        return 0

    def read_positions(self, lengths: np.ndarray, mask_pos: np.ndarray,
                       n_prompt: int) -> np.ndarray:
        """``[B]`` absolute position (prompt included) where the label is read, or -1:
        the mask token by default."""
        return mask_pos.copy()

    @abc.abstractmethod
    def label_logits(self, outputs, batch, verb_ids: list[int] | None,
                     head: HeadWeights | None, n_prompt: int,
                     device: torch.device) -> torch.Tensor | None:
        """``[B, C]`` float32 label logits of one forward pass's ``outputs`` (None: no
        labels)."""

    def __repr__(self) -> str:
        return f"<readout {self.name}>"


def _verbalizer_logits(logits: torch.Tensor, rows_pos: torch.Tensor | None,
                       verb_ids: list[int], device) -> torch.Tensor:
    import torch

    ids = torch.as_tensor(verb_ids, device=device)
    if rows_pos is None:
        return logits[:, 0, :].index_select(-1, ids).float()
    rows = torch.arange(logits.shape[0], device=device)
    return logits[rows, rows_pos].index_select(-1, ids).float()


class MaskedLM(Readout):
    name = "mlm"
    uses_verbalizer = True
    needs_mask = True
    has_read_position = True
    auto_class = "AutoModelForMaskedLM"
    priority = 10

    def detect(self, config, architecture: str) -> bool:
        return architecture.endswith("ForMaskedLM")

    def label_logits(self, outputs, batch, verb_ids, head, n_prompt, device):
        import torch

        pos = torch.as_tensor(batch.readout_pos, device=device)
        return _verbalizer_logits(outputs.logits, pos, verb_ids, device)


class CausalLM(MaskedLM):
    name = "causal"
    fills_mask = False
    needs_mask = False
    auto_class = "AutoModelForCausalLM"
    priority = 20

    def detect(self, config, architecture: str) -> bool:
        if architecture.endswith(("LMHeadModel", "ForCausalLM")):
            return True
        # no architectures recorded (a GGUF file, a config built in code): a decoder-only
        # family is a causal LM (GGUF files carry the LM head)
        return not architecture and _decoder_only(config)

    def read_positions(self, lengths, mask_pos, n_prompt):
        return n_prompt + lengths - 1  # the next token after the last real one


class Seq2Seq(Readout):
    name = "seq2seq"
    uses_verbalizer = True
    needs_encoder_decoder = True
    auto_class = "AutoModelForSeq2SeqLM"
    priority = 30

    def detect(self, config, architecture: str) -> bool:
        return bool(getattr(config, "is_encoder_decoder", False))

    def label_logits(self, outputs, batch, verb_ids, head, n_prompt, device):
        return _verbalizer_logits(outputs.logits, None, verb_ids, device)


class Classifier(Readout):
    name = "classifier"
    auto_class = "AutoModelForSequenceClassification"
    reads_pooler = True
    priority = 40

    def detect(self, config, architecture: str) -> bool:
        return architecture.endswith("ForSequenceClassification")

    def n_classes(self, model, verb_ids, n_head) -> int:
        return int(model.config.num_labels)

    def label_logits(self, outputs, batch, verb_ids, head, n_prompt, device):
        return outputs.logits.float()


class PromptHead(Readout):
    name = "head"
    uses_head = True

    def label_logits(self, outputs, batch, verb_ids, head, n_prompt, device):
        import torch

        if head is None:
            raise UsageError("readout 'head' needs the head saved with a tuned prompt")
        hs = outputs.last_hidden_state if hasattr(outputs, "last_hidden_state") else outputs[0]
        if head.pool == "mean":
            m = torch.zeros(hs.shape[:2], device=device, dtype=hs.dtype)
            for i, n in enumerate(batch.lengths):
                m[i, n_prompt:n_prompt + int(n)] = 1
            vec = (hs * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True)
        else:
            pos = torch.as_tensor(batch.mask_tok_pos if head.pool == "mask" else
                                  [n_prompt] * len(batch.lengths), device=device)
            if (pos < 0).any():
                raise UsageError("the head reads the <mask> position but an example has none")
            vec = hs[torch.arange(hs.shape[0], device=device), pos]
        out = vec.float() @ head.weight.to(device).float().T
        return out + head.bias.to(device).float() if head.bias is not None else out


class NoReadout(Readout):
    name = "none"
    gives_logits = False

    def label_logits(self, outputs, batch, verb_ids, head, n_prompt, device):
        return None


READOUTS: dict[str, Readout] = {}


def register(strategy: Readout) -> Readout:
    """Add a readout strategy (its :attr:`Readout.name` must be new)."""
    if strategy.name in READOUTS or strategy.name == "auto":
        raise RuntimeError(f"readout {strategy.name!r} is registered twice")
    READOUTS[strategy.name] = strategy
    return strategy


for _s in (MaskedLM(), CausalLM(), Seq2Seq(), Classifier(), PromptHead(), NoReadout()):
    register(_s)


def readout_names(with_auto: bool = True) -> tuple[str, ...]:
    """The readout names a user may give (``auto`` first)."""
    return (("auto",) if with_auto else ()) + tuple(READOUTS)


def get_readout(name: str) -> Readout:
    """The strategy named ``name``; an unknown name is a one-line UsageError."""
    try:
        return READOUTS[name]
    except KeyError:
        raise ExtractError(f"{arg('readout')} must be one of {', '.join(readout_names())}, "
                         f"not {name!r}") from None


def head_readout() -> Readout:
    """The strategy that reads through a head saved with a soft prompt."""
    return next(s for s in READOUTS.values() if s.uses_head)


def may_give_logits(name: str) -> bool:
    """Whether readout ``name`` can give label logits (``auto``: until a model decides)."""
    return name == "auto" or get_readout(name).gives_logits


def auto_readout(config, has_head: bool = False, architecture: str | None = None) -> str:
    """The name of :func:`auto_strategy`'s choice."""
    return auto_strategy(config, has_head, architecture).name


def auto_strategy(config, has_head: bool = False, architecture: str | None = None) -> Readout:
    """The strategy implied by ``architecture`` (default ``config.architectures[0]``; for a
    model object, its class name); a prompt that carries a head: the head; ``none`` when
    nothing announces one."""
    if has_head:
        return head_readout()
    arch = architecture if architecture is not None else (
        (getattr(config, "architectures", None) or [""])[0] or "")
    for s in sorted(READOUTS.values(), key=lambda s: s.priority):
        if s.detect(config, arch):
            return s
    return next(s for s in READOUTS.values() if not s.gives_logits)


def choose_readout(name: str, config, has_head: bool = False,
                   architecture: str | None = None) -> Readout:
    """``name`` resolved (``auto`` by :func:`auto_strategy`) and checked against the model."""
    s = auto_strategy(config, has_head, architecture) if name == "auto" else get_readout(name)
    if s.needs_encoder_decoder and not getattr(config, "is_encoder_decoder", False):
        raise ExtractError(f"{given('readout', s.name)} needs an encoder-decoder model "
                           "such as T5")
    return s


def _decoder_only(config) -> bool:
    from neurondb.arch import adapter_for
    from neurondb.arch.adapter import UnsupportedModelError

    try:
        stacks = adapter_for(config).stacks
    except UnsupportedModelError:
        return False
    return [s.name for s in stacks] == ["decoder"]
