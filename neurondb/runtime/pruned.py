"""Loading a model that ``neurondb prune`` exported (compact: FFNs at their pruned widths)
without ``trust_remote_code``: the runtime's half of :mod:`neurondb.intervene.export`.

``config.neurondb_prune`` lists every FFN projection with its role and width; the stock class
is subclassed so that ``__init__`` shrinks those projections before the checkpoint loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import transformers
from torch import nn

from neurondb.arch.channels import ops_for
from neurondb.errors import ExportError

CONFIG_KEY = "neurondb_prune"
CLASS_PREFIX = "NeurondbPruned"


def stock_class(model: nn.Module) -> type:
    """The Transformers class of ``model`` (a pruned subclass maps back to its base)."""
    for cls in type(model).__mro__:
        if not cls.__name__.startswith(CLASS_PREFIX):
            return cls
    raise ExportError(f"cannot find the stock class of {type(model).__name__}")


def apply_shrink_spec(model: nn.Module, spec: Mapping) -> nn.Module:
    """Shrink ``model``'s projections to ``spec`` (first ``width`` channels; the weights
    are then overwritten by a checkpoint). The library twin of the exported modeling file."""
    base = model.base_model
    names = dict(base.named_modules())
    for entry in spec.get("modules", []):
        module = names.get(entry["path"])
        if module is None:
            continue  # this head lacks that part (e.g. the decoder of an encoder-only class)
        ops = ops_for(module)
        ops.resize(module, entry["role"], int(entry["width"]))
        if entry["role"] == "out" and entry.get("bias") and module.bias is None:
            ops.add_bias(module, module.weight.new_zeros(ops.d_out(module)))
    return model


def _resolve_class(config, model_class) -> type:
    if model_class is None:
        archs = getattr(config, "architectures", None) or []
        if not archs or not hasattr(transformers, archs[0]):
            raise ExportError(f"the export names no transformers architecture ({archs}); "
                              "pass model_class=")
        return getattr(transformers, archs[0])
    if isinstance(model_class, str):
        model_class = getattr(transformers, model_class)
    mapping = getattr(model_class, "_model_mapping", None)
    if mapping is not None:  # an Auto class
        return mapping[type(config)]
    return model_class


def pruned_class(cls: type) -> type:
    """A subclass of the stock class ``cls`` that shrinks its FFNs in ``__init__`` to
    ``config.neurondb_prune`` (like the exported modeling file, without remote code)."""

    def __init__(self, config, *args, **kwargs):
        cls.__init__(self, config, *args, **kwargs)
        apply_shrink_spec(self, getattr(config, CONFIG_KEY, None) or {})

    return type(f"{CLASS_PREFIX}{cls.__name__}", (cls,),
                {"__init__": __init__, "__module__": __name__})


def load_pruned(path: str | Path, model_class=None, **kwargs) -> nn.Module:
    """Load a neurondb export (compact or zeroed) without ``trust_remote_code``.

    ``model_class``: a Transformers class, an Auto class (``transformers.AutoModel`` loads
    the bare encoder of a masked-LM export) or a class name; default: the exported
    architecture. ``kwargs`` go to ``from_pretrained``. Returns the model in eval mode.
    """
    path = Path(path)
    if not (path / "config.json").exists():
        raise ExportError(f"{path} is not a model directory (no config.json)")
    config = transformers.AutoConfig.from_pretrained(path)
    cls = _resolve_class(config, model_class)
    spec = getattr(config, CONFIG_KEY, None) or {}
    if spec.get("modules"):
        cls = pruned_class(cls)
    model = cls.from_pretrained(path, **kwargs)
    model.eval()
    return model
