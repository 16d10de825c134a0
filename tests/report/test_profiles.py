"""The report shows a store's profile runs: the per-layer summary, the frac_positive figure
and the top tokens (with context) of the hardest-firing neurons."""

from __future__ import annotations

import neurondb
from neurondb.report import write_report
from neurondb.testing import save_tiny


def test_report_has_a_profile_section(tmp_path, sentiment_dir):
    model = str(save_tiny("bert", tmp_path / "m", head="base"))
    st = neurondb.extract(model, str(sentiment_dir), tmp_path / "s", readout="none",
                          profile=True, top_k=3, progress=False, run="prof")
    summary = write_report(st, tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    sec = next(s for s in summary.sections if s.key == "profiles")
    assert sec.present and sec.figures == 1 and sec.detail == "1 profile run(s)"
    assert '<section id="profiles">' in html and "[[" in html  # a context window, marked
    hardest = st.profile(run="prof").nlargest(1, "max").iloc[0]
    assert f"layer {hardest.layer}, neuron {hardest.neuron}: max" in html
    st.close()
