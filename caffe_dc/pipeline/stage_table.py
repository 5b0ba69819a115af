"""The stages of ``reproduce`` and ``compress``, declared once.

Each row names a stage, the stages whose outputs it reads, the module that
holds its body (``stage_inputs(run)`` and ``run_stage(run)``; an optional
``wanted(run)`` and ``SKIPPED`` reason make it optional), its own folder if
it has one, and the package code its numbers depend on besides its own
module. Everything else is derived from this table by ``pipeline.reproduce``:
the ``[i/N]`` numbering, the folders that are emptied when their inputs
change, the fingerprints (and so which stages a change redoes), and the
report's list of stages. Adding a stage is one module and one row.

A stage returns its typed ``Record`` (a dataclass declared in its module,
``stages.run.StageRecord``), which the pipeline writes once into
pipeline.json; it sees the records of the stages in its ``reads`` and no
others (``Run.out`` refuses an undeclared read at once), and writes into its
own ``folder`` (``Run.folder``): no stage body or report names a folder.
"""
from __future__ import annotations

from types import ModuleType
from typing import NamedTuple, Optional, Tuple

from caffe_dc.base.fingerprint import package_path
from caffe_dc.report import run_report
from caffe_dc.stages import (caffe_test, choose, control, data, decode, encode, exact_test, prune, quantize, reference,
                             sensitivity)

# What training numbers depend on: the algorithms, the Caffe glue, the nets and solvers, the base layer. Not
# the preset schedules: what a stage takes from one is among its inputs, so a preset's new closed-loop
# setting redoes the pruning, not the reference.
TRAINING = ("base", "algorithms", "pycaffe", "zoo/prototxt", "zoo/solvers", "stages/run.py")
# What reads or writes the compressed file depends on the codec as well.
CODED = TRAINING + ("codec",)


class Stage(NamedTuple):
    name: str
    reads: Tuple[str, ...]
    module: ModuleType
    code: Tuple[str, ...]
    folder: Optional[str] = None

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")

    @property
    def code_parts(self) -> Tuple[str, ...]:
        """The code this stage's numbers depend on, its own module always included."""
        return self.code + (package_path(self.module.__file__),)

    def wanted(self, run) -> bool:
        return getattr(self.module, "wanted", lambda r: True)(run)


STAGES: Tuple[Stage, ...] = (
    Stage("data", (), data, TRAINING),
    Stage("reference", ("data",), reference, TRAINING, folder="reference"),
    Stage("sensitivity", ("reference",), sensitivity, TRAINING, folder="sensitivity"),
    Stage("choose", ("reference", "sensitivity"), choose, CODED),
    Stage("prune", ("reference", "choose"), prune, TRAINING, folder="prune"),
    Stage("quantize", ("prune",), quantize, TRAINING, folder="quantize"),
    Stage("encode", ("quantize",), encode, CODED),
    Stage("decode", ("encode", "quantize"), decode, CODED),
    Stage("caffe_test", ("decode", "quantize"), caffe_test, CODED),
    Stage("control", ("reference", "choose", "prune"), control, TRAINING, folder="control"),
    Stage("test", ("reference", "prune", "quantize", "decode", "caffe_test", "control"), exact_test, CODED,
          folder="test"),
    Stage("report", ("data", "reference", "sensitivity", "choose", "prune", "quantize", "encode", "decode", "caffe_test",
                     "control", "test"),
          run_report, CODED + ("report",)),
)
NAMES = tuple(s.name for s in STAGES)
FOLDERS = {s.name: s.folder for s in STAGES if s.folder}   # stage name -> its folder in a run
RECORDS = {s.name: s.module.Record for s in STAGES if hasattr(s.module, "Record")}   # stage name -> its record


def check(table=STAGES) -> None:
    """A stage reads only stages declared before it, each name once (caught at import, not mid-run)."""
    seen = set()
    for s in table:
        if s.name in seen:
            raise ValueError("stage %r is declared twice" % s.name)
        missing = [r for r in s.reads if r not in seen]
        if missing:
            raise ValueError("stage %r reads %s, not declared before it" % (s.name, ", ".join(missing)))
        seen.add(s.name)


check()
