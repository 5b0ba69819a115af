"""The stage table (no Caffe needed): each stage declared once, and what is derived from it."""
import pytest

from caffe_dc.base.fingerprint import code_version
from caffe_dc.pipeline import stage_table
from caffe_dc.pipeline.stage_table import STAGES, Stage, check
from caffe_dc.stages import exact_test


def descendants(name):
    """The stages that read ``name``, directly or through others."""
    out, frontier = set(), {name}
    while frontier:
        nxt = {s.name for s in STAGES if set(s.reads) & frontier} - out
        out |= nxt
        frontier = nxt
    return out


def test_every_row_points_at_a_stage_module():
    for s in STAGES:
        assert callable(s.module.stage_inputs) and callable(s.module.run_stage), s.name
        assert s.code_parts[-1].endswith(".py") and s.module.__file__.endswith(s.code_parts[-1]), s.name
        if hasattr(s.module, "wanted"):
            assert s.module.SKIPPED, "an optional stage says why it is skipped: %s" % s.name
    folders = [s.folder for s in STAGES if s.folder]
    assert len(folders) == len(set(folders))


def test_every_stage_body_lives_in_stages_but_the_report():
    for s in STAGES:
        assert s.code_parts[-1].startswith("stages/" if s.name != "report" else "report/"), s.name


def test_a_stage_may_read_only_what_is_declared_before_it():
    data = STAGES[0]
    with pytest.raises(ValueError, match="reads reference"):
        check((Stage("data", ("reference",), data.module, ()),))
    with pytest.raises(ValueError, match="declared twice"):
        check((data, data))
    check()


def test_each_stage_fingerprints_its_own_module():
    """Editing a stage's module changes its code version and no other stage's."""
    versions = {s.name: code_version(s.code_parts) for s in STAGES}
    assert len(set(versions.values())) == len(STAGES)
    for s in STAGES:
        others = [t for t in STAGES if t is not s]
        assert all(s.code_parts[-1] not in t.code_parts for t in others), s.name


def test_the_report_reads_every_stage_before_it():
    assert STAGES[-1].name == "report"
    assert set(STAGES[-1].reads) == {s.name for s in STAGES[:-1]}
    assert descendants("encode") == {"decode", "caffe_test", "test", "report"}
    assert "control" in descendants("prune")   # as many restarts as the pruning made


def test_the_reports_stage_list_is_the_table_in_order():
    """What the table derives for the report: its list of stages, numbered in the table's order, each stage's
    own figures on its own row (a hand-written or reordered list, or a row taking another's figures, fails)."""
    from caffe_dc.report.run_report import _stage_list
    from caffe_dc.stages.run import RunRecord

    state = {s.name: {"done": True, "seconds": float(i), "fingerprint": "fp-" + s.name}
             for i, s in enumerate(STAGES, 1)}
    test = exact_test.Record(n=1, models={"control": {}}, paired={})   # the control ran
    rec = RunRecord(*[None] * 17, state=state, stages=stage_table.NAMES, folders={}, records={"test": test})
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in _stage_list(rec).splitlines()[2:]]
    assert [r[1] for r in rows] == [s.label for s in STAGES]
    assert [r[0] for r in rows] == [str(i) for i in range(1, len(STAGES) + 1)]
    for r, s in zip(rows[:-1], STAGES):
        assert r[3:] == ["%.1f" % (STAGES.index(s) + 1), "`fp-%s`" % s.name], s.name
