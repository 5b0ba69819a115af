"""A stage reads only the stages it declares, and only the stage table names folders (no Caffe needed)."""
import ast
import glob
import inspect
import json
import os
import types

import pytest

from caffe_dc.base.errors import InternalError
from caffe_dc.pipeline.stage_table import FOLDERS, RECORDS, STAGES
from caffe_dc.stages import exact_test
from caffe_dc.stages.run import Run, RunOptions

PKG = os.path.dirname(os.path.dirname(os.path.abspath(inspect.getfile(Run))))
FOLDER_NAMES = set(FOLDERS.values())


MODELS = ("reference", "prune", "quantize", "decode", "control")   # the stages whose output is a caffemodel


class Plain:
    """A record of whatever a fake stage wrote (the real ones check their fields; here only reads are tested)."""

    @staticmethod
    def of(d):
        return types.SimpleNamespace(**{k: v for k, v in d.items() if k != "done"})


def finished_run():
    """A run whose every stage is done, the model-making ones with a model, as the pipeline keeps them."""
    state = {s.name: dict({"done": True}, **({"caffemodel": s.name + ".caffemodel"} if s.name in MODELS else {}))
             for s in STAGES}
    return Run(opts=RunOptions(net="lenet-5", dense_control=True), src=None, info=None, preset="quick", declared=None,
               declared_doc={}, schedule_source="test", run_dir="run", command="", snapshot_every=1, test_iter=1,
               state=state, folders=FOLDERS, records={s.name: Plain for s in STAGES})


@pytest.mark.parametrize("stage", STAGES, ids=[s.name for s in STAGES])
def test_an_undeclared_read_fails_at_once(stage):
    view = finished_run().for_stage(stage.name, stage.reads)
    for other in STAGES:
        if other.name in stage.reads:
            assert view.done(other.name) and view.out(other.name) is not None
        else:
            with pytest.raises(InternalError, match="stage %r reads %r, which it does not declare" % (stage.name,
                                                                                                      other.name)):
                view.out(other.name)
            with pytest.raises(InternalError, match="does not declare"):
                view.done(other.name)
    if stage.folder:
        assert view.folder("x") == os.path.join("run", stage.folder, "x")
    else:
        with pytest.raises(InternalError, match="no folder"):
            view.folder("x")


def _literal_reads(tree):
    """Stage names read with a literal: ``X.out("name")`` and ``X.done("name")``."""
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("out", "done")
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            yield node.args[0].value, node.lineno


@pytest.mark.parametrize("stage", STAGES, ids=[s.name for s in STAGES])
def test_every_stage_body_reads_what_it_declares(stage):
    """The walk over every stage's module: each literal read is declared (the run would refuse it anyway)."""
    tree = ast.parse(inspect.getsource(stage.module))
    undeclared = [(name, line) for name, line in _literal_reads(tree) if name not in stage.reads]
    assert not undeclared, "%s reads %s without declaring it" % (stage.name, undeclared)


def test_the_exact_test_scores_the_models_of_what_it_reads():
    stage = next(s for s in STAGES if s.module is exact_test)
    view = finished_run().for_stage(stage.name, stage.reads)
    assert exact_test.models(view) == list(MODELS)
    no_control = view.for_stage(stage.name, tuple(n for n in stage.reads if n != "control"))
    assert "control" not in exact_test.models(no_control)


def _folder_literals(path):
    """Calls that build a path from a stage folder's name: ``path("prune", ...)``, ``join(d, "quantize", ...)``."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
            if name in ("path", "join", "folder", "Path"):
                for a in node.args:
                    if isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value.split("/")[0] in FOLDER_NAMES:
                        yield "%s:%d %s" % (os.path.relpath(path, PKG), node.lineno, a.value)


# Reads finished run folders, committed ones included, by their documented layout (docs/statistics.md:
# test/NAME_correct.npy), not a run in progress.
RUN_LAYOUT_READERS = ("report/seeds.py",)


def test_stage_folders_are_named_only_in_the_table():
    found = []
    for root, _, files in os.walk(PKG):
        for f in files:
            path = os.path.join(root, f)
            if f.endswith(".py") and f != "stage_table.py" and os.path.relpath(path, PKG) not in RUN_LAYOUT_READERS:
                found.extend(_folder_literals(path))
    assert not found, found


def test_the_folder_check_sees_a_folder_named_in_a_path(tmp_path):
    p = tmp_path / "m.py"
    p.write_text('import os\nos.path.join(d, "quantize", "clusters.json")\nr.path("prune/round1")\nr.path("x")\n')
    assert [x.split(" ")[-1] for x in _folder_literals(str(p))] == ["quantize", "prune/round1"]


COMMITTED = sorted(glob.glob(os.path.join(os.path.dirname(PKG), "results", "**", "pipeline.json"), recursive=True))
PIPELINE_KEYS = ("done", "seconds", "fingerprint", "inputs")


@pytest.mark.parametrize("path", COMMITTED, ids=[os.path.relpath(os.path.dirname(p), os.path.dirname(PKG)) for p in COMMITTED])
def test_the_records_read_and_write_the_committed_pipeline_json(path):
    """Each stage's record holds exactly what a committed run wrote for that stage, and writes it back."""
    assert COMMITTED
    with open(path) as f:
        state = json.load(f)
    for name, kind in RECORDS.items():
        if name not in state:
            continue
        # Runs made before the records (the MNIST results, at ac8cc74) wrote an unset optional field as null.
        written = {k: v for k, v in state[name].items()
                   if k not in PIPELINE_KEYS and not (v is None and k in kind.OPTIONAL)}
        assert kind.of(state[name]).as_dict() == written, name
