"""Which Transformers ``Auto`` class loads which model class, and loading by name or path."""

from __future__ import annotations

from pathlib import Path

import transformers
from transformers.models.auto import modeling_auto

# Auto class -> the name table in transformers.models.auto.modeling_auto (model_type -> class).
# Specific heads first: the first match wins when choosing a loader for an architecture.
AUTO_TABLES: dict[str, str] = {
    "AutoModelForMaskedLM": "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
    "AutoModelForCausalLM": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "AutoModelForSeq2SeqLM": "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
    "AutoModelForSequenceClassification": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "AutoModelForTokenClassification": "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
    "AutoModelForQuestionAnswering": "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES",
    "AutoModelForTextEncoding": "MODEL_FOR_TEXT_ENCODING_MAPPING_NAMES",
    "AutoModel": "MODEL_MAPPING_NAMES",
}


def _names(value) -> tuple[str, ...]:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def auto_classes(model_type: str) -> dict[str, str]:
    """``{Auto class name: model class name}`` for every head of ``model_type`` known to
    Transformers (from :data:`AUTO_TABLES`), e.g. ``bert`` -> ``AutoModelForMaskedLM:
    BertForMaskedLM, ..., AutoModel: BertModel``. Classes absent from ``transformers`` are
    left out."""
    out = {}
    for auto, table in AUTO_TABLES.items():
        value = getattr(modeling_auto, table, {}).get(model_type)
        if value is None:
            continue
        for name in _names(value):
            if hasattr(transformers, name):
                out[auto] = name
                break
    return out


def auto_class_for(config) -> type:
    """The ``Auto`` class that builds ``config.architectures[0]`` (MaskedLM, CausalLM,
    Seq2SeqLM, SequenceClassification, ...; ``AutoModel`` without architectures)."""
    archs = getattr(config, "architectures", None) or []
    if archs:
        for auto, table in AUTO_TABLES.items():
            value = getattr(modeling_auto, table, {}).get(config.model_type)
            if value is not None and archs[0] in _names(value):
                return getattr(transformers, auto)
        if hasattr(transformers, archs[0]):
            return getattr(transformers, archs[0])
    return transformers.AutoModel


def load_model(name_or_path: str | Path, **kwargs):
    """``(model in eval mode, tokenizer or None)`` for a hub name, a local directory, a
    ``.gguf`` file or an offline alias (``minilm``, ``smollm2``: the same names ``extract``
    takes, resolved by :func:`neurondb.runtime.model.resolve_model_name`).

    A neurondb compact export is loaded through :func:`neurondb.intervene.load_pruned`.
    """
    from transformers import AutoConfig, AutoTokenizer

    from neurondb.runtime.model import _split_gguf, resolve_model_name

    name_or_path, gguf = _split_gguf(resolve_model_name(str(name_or_path)))
    kwargs = {**gguf, **kwargs}
    config = AutoConfig.from_pretrained(name_or_path, **gguf)
    prune = getattr(config, "neurondb_prune", None)
    if isinstance(prune, dict) and prune.get("modules"):
        from neurondb.runtime.pruned import load_pruned

        model = load_pruned(name_or_path, **kwargs)
    else:
        model = auto_class_for(config).from_pretrained(name_or_path, **kwargs)
    model.eval()
    try:
        tok = AutoTokenizer.from_pretrained(name_or_path, **gguf)
    except (OSError, ValueError, TypeError, KeyError):
        tok = None
    return model, tok
