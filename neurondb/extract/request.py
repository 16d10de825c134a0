"""``ExtractRequest``: everything an extraction is asked to do, typed, validated once and never
changed. What is derived from it (the loaded model, the resolved template and readout, run
names) lives in the job that carries it out (:class:`neurondb.extract.run.Extraction`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neurondb.errors import ExtractError, arg
from neurondb.runtime.data import check_max_examples
from neurondb.runtime.forward import GRAD_TARGETS


@dataclass(frozen=True)
class ExtractRequest:
    """One extraction; the CLI flags and the keyword arguments of :func:`neurondb.extract`
    map one to one onto these fields.

    ``model``: a hub name, a local directory, a ``.gguf`` file, an offline alias, or a loaded
    ``PreTrainedModel`` (used as it is, with ``tokenizer``). ``data``: a name or path, or a
    ``pandas.DataFrame`` / ``pyarrow.Table`` / ``datasets.Dataset`` (its rows are the split).
    """

    model: Any
    data: Any
    out: str | Path
    tokenizer: Any = None
    split: str = "validation"
    data_config: str | None = None
    text_fields: list[str] | None = None
    label_field: str | None = "label"
    template: str | None = None
    verbalizer: list[str] | None = None
    task: str | None = None
    readout: str = "auto"
    prompt: str | None = None
    positions: list[str] | str | None = None
    stats_split: str | None = None
    grad: bool = False
    grad_target: str = "gold"
    dtype: str | None = None  # None: default_storage_dtype(positions)
    model_dtype: str | None = None
    max_examples: int | None = None
    batch_size: int = 32
    max_length: int | None = None
    device: str = "auto"
    run: str | None = None
    overwrite: bool = False
    progress: bool = True
    chunk_examples: int = 4096
    device_map: str | None = None
    writer_thread: bool = True
    encoding: str = "utf-8"
    drop_missing_text: bool = False
    #: --profile: reduce every captured token on the device (neurondb.profile), no per-token
    #: tensors; top_k and profile_bins as neurondb.extract.profiling.DEFAULT_TOP_K / DEFAULT_BINS
    profile: bool = False
    top_k: int = 20
    profile_bins: int = 256
    correlate_layers: list[int] | None = None  # --profile: within-model correlation sums
    #: --profile: also store per-token tensors of these positions (e.g. "mask"), in a second
    #: run written from the same forward pass (``<run>`` beside ``<run>-profile``)
    also_capture: list[str] | str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.grad_target not in GRAD_TARGETS:
            raise ExtractError(f"{arg('grad_target')} must be one of "
                               f"{', '.join(GRAD_TARGETS)}, not {self.grad_target!r}")
        if self.batch_size < 1:
            raise ExtractError(f"{arg('batch_size')} must be at least 1")
        if self.chunk_examples < 1:
            raise ExtractError(f"{arg('chunk_examples')} must be at least 1")
        check_max_examples(self.max_examples)

    @property
    def model_label(self) -> str:
        """How messages and the manifest name the model: its name or path, or the loaded
        object's ``config._name_or_path``."""
        if isinstance(self.model, (str, Path)):
            return str(self.model)
        cfg = getattr(self.model, "config", None) or getattr(
            getattr(self.model, "model", None), "config", None)
        return str(getattr(cfg, "_name_or_path", "") or type(self.model).__name__)

    @property
    def data_label(self) -> str | None:
        """The data's name or path; None for data given in memory."""
        return str(self.data) if isinstance(self.data, (str, Path)) else None


#: the name the first API had
ExtractConfig = ExtractRequest
