"""`neurondb report`: one self-contained HTML page of everything a store holds.

The page has a header with the store's provenance (model, shape, runs), the findings against
the papers' claims (suppression, pruning, condensation: holds / does not hold / too noisy to
tell, see :mod:`neurondb.findings`), and one section per kind of result in ``results/``:
rankings by layer, the top neurons' top examples, ranking correlations, activated-neuron
overlaps, masks, prompt transfer, suppression curves, pruning, and (with ``condensed=``) the
prompt re-tuned on the pruned model and (with ``prompts=``) prompt-tuning curves. Figures are embedded PNGs; the file needs no
network, no script and no other file. A kind of result the store lacks is a one-line note
naming the command that makes it.

Modules: :mod:`~neurondb.report.collect` reads the store into records,
:mod:`~neurondb.report.summaries` computes the numbers, :mod:`~neurondb.report.figures` draws
them, :mod:`~neurondb.report.html` renders the page, :mod:`~neurondb.report.sections` puts
each section together.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from neurondb.report.errors import ReportError
from neurondb.store.io import output_file_problem
from neurondb.store.reader import Store

__all__ = ["ReportError", "ReportSummary", "SectionSummary", "write_report"]


@dataclass
class SectionSummary:
    """One section of a written report: shown (with ``figures`` PNGs) or left out (``note``)."""

    key: str
    title: str
    present: bool
    figures: int
    detail: str     # what it shows ("2 rankings") or, if absent, why and which command


@dataclass
class ReportSummary:
    """What :func:`write_report` wrote: the file, its size in bytes, the sections, the time
    taken in seconds, and result files that were left out (``problems``)."""

    path: Path
    title: str
    size_bytes: int
    seconds: float
    sections: list[SectionSummary] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def figures(self) -> int:
        """Embedded PNGs in the page."""
        return sum(s.figures for s in self.sections)

    def text(self) -> str:
        """A few lines for the terminal: one per section, then the path."""
        lines = [f"{self.title}"]
        w = max((len(s.title) for s in self.sections), default=0)
        for s in self.sections:
            mark = "+" if s.present else "-"
            extra = f" ({s.figures} figure{'s' * (s.figures != 1)})" if s.figures else ""
            lines.append(f"  {mark} {s.title:<{w}}  {s.detail}{extra}")
        if self.problems:
            lines.append(f"  ! {len(self.problems)} result file(s) left out: "
                         + "; ".join(self.problems[:3]) + (" ..." if len(self.problems) > 3 else ""))
        lines.append(f"report: {self.path} ({self.size_bytes / 1e6:.2f} MB, {self.figures} figures, "
                     f"{self.seconds:.1f} s)")
        return "\n".join(lines)


def _prompt_list(prompts: Sequence[str | Path] | str | Path | None) -> list[str | Path] | None:
    """Prompt directories as a list (a string may be comma-separated); None if none."""
    if prompts is None:
        return None
    if isinstance(prompts, str):
        prompts = [p.strip() for p in prompts.split(",") if p.strip()]
    elif isinstance(prompts, Path):
        prompts = [prompts]
    return list(prompts) or None


def write_report(store: Store | str | Path, out_html: str | Path, *,
                 prompts: Sequence[str | Path] | str | Path | None = None,
                 condensed: Sequence[str | Path] | str | Path | None = None,
                 latency_context: dict | None = None,
                 title: str | None = None) -> ReportSummary:
    """Write the report of ``store`` (a :class:`Store` or a path) to ``out_html``.

    ``prompts``: tuned-prompt directories (a ``neurondb tune --out`` directory or seed
    directories; a string may list several, comma-separated) whose training curves to
    include; ``condensed``: prompt directories re-tuned on a pruned model (``neurondb tune
    --from-prompt``), shown as the condensation section; ``latency_context``: the torch
    ``threads``, ``cores`` and ``load_average`` (1, 5, 15 min) the pruned model was timed
    under, printed with the latencies; ``title``: the page title (default ``neurondb report: <store name>``). The file
    is written atomically (temporary file, then rename). Returns what was written.
    """
    from neurondb.query.results import as_store
    from neurondb.report import html, sections
    from neurondb.report.collect import collect

    t0 = time.perf_counter()
    out = Path(out_html)
    problem = output_file_problem(out, "report.html")
    if problem:
        raise ReportError(problem)
    st = as_store(store)
    try:
        contents = collect(st, _prompt_list(prompts), _prompt_list(condensed), latency_context)
        title = title or f"neurondb report: {st.path.name}"
        secs = sections.build(contents, st)
    finally:
        if st is not store:
            st.close()
    footer = ("<p class=\"meta\">Made by <code>neurondb report</code> on "
              f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}.</p>\n")
    doc = html.page(title, sections.header(contents.store, contents), secs, footer)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(doc, encoding="utf-8")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return ReportSummary(
        path=out, title=title, size_bytes=out.stat().st_size, seconds=time.perf_counter() - t0,
        sections=[SectionSummary(s.key, s.title, s.present, s.figures,
                                 s.summary if s.present else s.note) for s in secs],
        problems=list(contents.problems))
