"""Templates with ``{text}``/``{text1}``/``{text2}`` and a ``{mask}`` slot; task presets.

A preset bundles a template, a verbalizer (one label word per class, in label order) and
the dataset's text/label fields, in the style of Skeleton's Table 3 and the PET/LM-BFF
templates the prompt-tuning papers use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from neurondb.errors import ExtractError, arg

_SLOT = re.compile(r"\{(text|text1|text2|mask)\}")


@dataclass(frozen=True)
class Template:
    """A template string. ``render(fields, mask_token)`` fills the text slots and the mask."""

    source: str

    def __post_init__(self) -> None:
        unknown = [m for m in re.findall(r"\{([^{}]*)\}", self.source)
                   if m not in ("text", "text1", "text2", "mask")]
        if unknown:
            raise ExtractError(f"template slot {{{unknown[0]}}} is unknown; use {{text}}, "
                               "{text1}, {text2} and {mask}")
        if self.source.count("{mask}") > 1:
            raise ExtractError("a template may have one {mask} slot")
        if self.n_texts == 0:
            raise ExtractError(f"template {self.source!r} has no text slot, so every example "
                               "would be the same input; add {text} (or {text1} and {text2} "
                               "for sentence pairs)")

    @property
    def has_mask(self) -> bool:
        return "{mask}" in self.source

    @property
    def n_texts(self) -> int:
        slots = set(_SLOT.findall(self.source)) - {"mask"}
        return 2 if "text2" in slots else (1 if slots else 0)

    def render(self, texts: list[str], mask_token: str | None) -> str:
        """Fill the slots: ``{text}``/``{text1}`` take ``texts[0]``, ``{text2}`` ``texts[1]``.

        ``mask_token=None`` cuts the template at ``{mask}`` (the answer slot of a causal LM,
        whose label is read at the next token).
        """
        src = self.source
        if mask_token is None and self.has_mask:
            src = src.split("{mask}")[0].rstrip()
        values = {"text": texts[0] if texts else "", "text1": texts[0] if texts else "",
                  "text2": texts[1] if len(texts) > 1 else "", "mask": mask_token or ""}
        return _SLOT.sub(lambda m: values[m.group(1)], src)


@dataclass(frozen=True)
class TaskPreset:
    name: str
    template: str
    verbalizer: tuple[str, ...]
    text_fields: tuple[str, ...]
    label_field: str = "label"
    labels: tuple[str, ...] = ()
    hub: tuple[str, ...] = field(default_factory=tuple)  # HF dataset name (and config)


PRESETS: dict[str, TaskPreset] = {p.name: p for p in (
    TaskPreset("sst2", "{text} It was {mask}.", ("terrible", "great"), ("sentence",),
               labels=("negative", "positive"), hub=("glue", "sst2")),
    TaskPreset("imdb", "{text} It was {mask}.", ("terrible", "great"), ("text",),
               labels=("negative", "positive"), hub=("imdb",)),
    TaskPreset("movie_reviews", "{text} It was {mask}.", ("terrible", "great"), ("text",),
               labels=("negative", "positive")),
    TaskPreset("mrpc", "{text1} {mask}, {text2}", ("No", "Yes"), ("sentence1", "sentence2"),
               labels=("not_equivalent", "equivalent"), hub=("glue", "mrpc")),
    TaskPreset("qqp", "{text1} {mask}, {text2}", ("No", "Yes"), ("question1", "question2"),
               labels=("not_duplicate", "duplicate"), hub=("glue", "qqp")),
    TaskPreset("qnli", "{text1} ? {mask}, {text2}", ("Yes", "No"), ("question", "sentence"),
               labels=("entailment", "not_entailment"), hub=("glue", "qnli")),
    TaskPreset("rte", "{text1} ? {mask}, {text2}", ("Yes", "No"), ("sentence1", "sentence2"),
               labels=("entailment", "not_entailment"), hub=("glue", "rte")),
    TaskPreset("ag_news", "{mask} News: {text}", ("World", "Sports", "Business", "Tech"),
               ("text",), labels=("World", "Sports", "Business", "Sci/Tech"), hub=("ag_news",)),
)}


def get_preset(name: str) -> TaskPreset:
    if name not in PRESETS:
        raise ExtractError(f"unknown task preset {name!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[name]


def task_for(data: str | None, task: str | None = None) -> str | None:
    """The task preset for ``data``: ``task`` if given (it must be a preset), else one named
    by the data (its name, file stem or directory name), else None."""
    if task:
        if task not in PRESETS:
            raise ExtractError(f"unknown {arg('task')} {task!r}; presets: {', '.join(PRESETS)}")
        return task
    if not data:
        return None
    p = Path(data)
    for cand in (data, p.name, p.stem, p.parent.name):
        if cand in PRESETS:
            return cand
    return None


@dataclass(frozen=True)
class LabelSpec:
    """How the label of one dataset is read, resolved once: the ``template`` source, the
    ``verbalizer`` words (None: none given anywhere), the ``readout`` name (``auto`` until a
    model decides it), the ``task`` preset (or None) and the soft prompt's ``pool``."""

    template: str | None
    verbalizer: list[str] | None
    readout: str
    task: str | None


def resolve_labels(data: str | None, *, task: str | None = None, template: str | None = None,
                   verbalizer: list[str] | None = None, readout: str = "auto",
                   prompt_meta: dict | None = None, prompt_has_head: bool = False,
                   default_template: str | None = "{text}") -> LabelSpec:
    """The one rule for template, verbalizer and readout, which every command that runs a
    model follows: **the argument, then the soft prompt's metadata (what it was tuned
    with), then the task preset of the data** (``{text}`` and no verbalizer when none
    says; ``default_template=None`` leaves the template None then). A prompt that carries a
    head is read through it; with ``readout="auto"`` a prompt without a head is read as it
    was tuned."""
    task = task_for(data, task)
    preset = PRESETS.get(task) if task else None
    meta = prompt_meta or {}
    tmpl = template or meta.get("template") or (preset.template if preset else None) or default_template
    verb = (list(verbalizer) if verbalizer else None) or meta.get("verbalizer") or (
        list(preset.verbalizer) if preset else None)
    if prompt_has_head:
        from neurondb.runtime.readouts import head_readout

        readout = head_readout().name
    elif readout == "auto" and meta.get("readout"):
        readout = str(meta["readout"])
    return LabelSpec(template=tmpl, verbalizer=list(verb) if verb else None, readout=readout,
                     task=task)
