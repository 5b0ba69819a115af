"""What a stage of ``reproduce`` / ``compress`` reads: the run's typed options and its context.

``RunOptions`` is the one, frozen, validated record of what the user asked
for; the CLI builds it and nothing below the CLI reads ``argparse``. ``Run``
is what the pipeline hands each stage: the options, the net and data, the
resolved schedule, the run folder and the outputs of the stages already
finished. A stage reads it and returns its own output (a JSON-able dict);
it never writes into it. ``RunRecord`` is the plain data the report is made
from, so the report depends on this declared record, not on the pipeline.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Dict, Mapping, NamedTuple, Optional, Tuple

from caffe_dc.algorithms.cluster_config import Init
from caffe_dc.base.errors import InputError, InternalError
from caffe_dc.base.fileio import require_file


@dataclasses.dataclass(frozen=True)
class DataOptions:
    """Where the MNIST-format images come from (``reproduce``; see ``cli.args.add_data_args``)."""
    data: Optional[str] = None      # a built-in set: MNIST (None) or "fashion-mnist"
    idx: Optional[str] = None
    name: Optional[str] = None
    download: Optional[str] = None
    data_root: str = "runs/data"
    limit: Optional[int] = None
    val: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """A whole run. ``net`` names one of the paper's nets (``reproduce``); ``solver`` a user's own
    (``compress``); exactly one is given. Values were checked when the command line was parsed;
    ``__post_init__`` checks what only the whole record can tell."""
    net: Optional[str] = None
    solver: Optional[str] = None
    test_lmdb: Optional[str] = None
    weights: Optional[str] = None
    schedule: Optional[str] = None
    quick: bool = False
    density: Optional[Mapping[str, float]] = None
    bits: Optional[Mapping[str, int]] = None
    init: Init = Init.LINEAR
    seed: int = 1
    out: Optional[str] = None
    dense_control: bool = False
    target_rate: Optional[float] = None     # a budget: the file's rate to reach ...
    max_drop: Optional[float] = None        # ... or the largest validation drop (pp) a layer may cost
    margin: Optional[float] = None          # non-inferiority margin (pp); None: stats.default_margin
    data: DataOptions = DataOptions()
    imagenet_train: Optional[str] = None
    imagenet_val: Optional[str] = None
    ref_iters: Optional[int] = None
    rounds: Optional[int] = None
    prune_iters: Optional[int] = None
    quant_iters: Optional[int] = None
    reconstruct: Optional[int] = None       # the schedule's reconstruct: training images each prune round refits on
    batch: Optional[int] = None
    test_batch: Optional[int] = None
    crop: Optional[int] = None

    def __post_init__(self):
        if (self.net is None) == (self.solver is None):
            raise ValueError("RunOptions needs exactly one of net (reproduce) and solver (compress)")
        object.__setattr__(self, "init", Init.parse(self.init))
        if self.target_rate is not None and self.max_drop is not None:
            raise InputError("give --target-rate or --max-drop, not both")
        if (self.target_rate is not None or self.max_drop is not None) and self.density:
            raise InputError("--density fixes the densities that a budget (--target-rate / --max-drop) would choose: "
                             "give one or the other")
        if self.solver is not None and not self.weights:
            raise InputError("compress needs the reference caffemodel: --weights REF.caffemodel")
        for what, path in (("caffemodel", self.weights), ("schedule", self.schedule), ("solver", self.solver)):
            if path is not None:
                require_file(path, what)

    @property
    def preset(self) -> str:
        """The schedule preset a paper net runs with ('custom' for a user's net)."""
        return "custom" if self.solver else ("quick" if self.quick else "full")

    def replace(self, **changes) -> "RunOptions":
        return dataclasses.replace(self, **changes)

    def result_settings(self) -> Dict[str, object]:
        """The settings that change a result and differ from their defaults (names a run folder)."""
        defaults = RunOptions(net="-")
        keep = ("schedule", "density", "bits", "init", "seed", "weights", "ref_iters", "rounds", "prune_iters",
                "quant_iters", "reconstruct", "batch", "test_batch", "crop", "test_lmdb", "target_rate", "max_drop")
        out = {k: getattr(self, k) for k in keep if getattr(self, k) != getattr(defaults, k)}
        out.update({k: v for k, v in dataclasses.asdict(self.data).items()
                    if k in ("limit", "val") and v is not None})
        return {k: (v.value if isinstance(v, Init) else v) for k, v in out.items()}


class StageRecord:
    """What a stage hands on: each stage module declares its ``Record``, a frozen dataclass of these.

    Written once, into ``pipeline.json`` (``as_dict``: every field, but an ``OPTIONAL`` one only when set,
    so the keys are those the stage always wrote), and read back by later stages and the report
    (``of``, which leaves out the pipeline's own keys: done, seconds, fingerprint, inputs).
    """
    OPTIONAL: Tuple[str, ...] = ()

    @classmethod
    def of(cls, d: Mapping) -> "StageRecord":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if not (f.name in self.OPTIONAL and getattr(self, f.name) is None)}


class RunRecord(NamedTuple):
    """A run as the report sees it: plain data, no behaviour."""
    net: str
    paper: bool
    preset: str
    command: str
    seed: int
    run_dir: str
    info: object                       # datasets.DataInfo
    schedule_doc: dict
    schedule_source: str
    schedule_description: Optional[str]
    rounds: int
    iters_per_round: int
    finetune_iters: int
    lr_factor: float
    snapshot_every: int
    origin: Tuple[Tuple[str, str], ...]
    changes: Tuple[str, ...]
    state: Dict[str, dict]             # each finished stage's entry in pipeline.json: done, seconds, fingerprint
    stages: Tuple[str, ...]            # the stage table's order
    folders: Dict[str, str]            # stage name -> its folder, for the stages that have one
    records: Dict[str, object]         # each finished stage's record (``StageRecord``), by stage name


@dataclasses.dataclass
class Run:
    """The context of one run, as each stage reads it (built by ``pipeline.reproduce``)."""
    opts: RunOptions
    src: object                        # pycaffe.nets.NetSource
    info: object                       # datasets.DataInfo
    preset: str
    declared: object                   # algorithms.schedule.Schedule as given (a budget, or densities)
    declared_doc: dict
    schedule_source: str
    run_dir: str
    command: str
    snapshot_every: int
    test_iter: int                     # TEST iterations covering the validation split once
    state: Dict[str, dict]
    stages: Tuple[str, ...] = ()
    progress: bool = True
    folders: Mapping[str, str] = dataclasses.field(default_factory=dict)   # the stage table's, by stage name
    records: Mapping[str, type] = dataclasses.field(default_factory=dict)  # stage name -> its Record class
    stage: Optional[str] = None        # the stage this view is for (``for_stage``); None: the pipeline's own
    reads: Tuple[str, ...] = ()        # what that stage declares it reads

    def for_stage(self, name: str, reads: Tuple[str, ...]) -> "Run":
        """The run as stage ``name`` sees it: the outputs of the stages it declares in ``reads``, no others."""
        return dataclasses.replace(self, stage=name, reads=tuple(reads))

    def path(self, *parts: str) -> str:
        return os.path.join(self.run_dir, *parts)

    def folder(self, *parts: str) -> str:
        """A path in this stage's own folder (the stage table names it)."""
        if self.stage not in self.folders:
            raise InternalError("stage %r has no folder in the stage table" % self.stage)
        return self.path(self.folders[self.stage], *parts)

    @property
    def budget(self) -> Optional[dict]:
        """The declared budget, if the run chooses its own densities (the ``sensitivity`` and ``choose`` stages)."""
        return self.declared.budget

    @property
    def schedule_doc(self) -> dict:
        """The schedule the run follows: the declared one, with what ``choose`` chose once it has run (the
        rounds, densities, bits), and a closed loop's round cap raised to the chosen rounds if below them."""
        if not (self.budget and self._chosen()):
            return self.declared_doc
        doc = dict(self.declared_doc, **self.state["choose"]["schedule"])
        loop = doc.get("closed_loop")
        if loop and loop.get("max_rounds", 0) < doc["rounds"]:
            doc["closed_loop"] = dict(loop, max_rounds=doc["rounds"])
        return doc

    @property
    def schedule(self):
        """``schedule_doc`` validated against the net's prunable layers."""
        if self.budget and self._chosen():
            from caffe_dc.algorithms.schedule import from_dict

            return from_dict(self.schedule_doc, self.src.layer_types(), where="the chosen schedule")
        return self.declared

    @property
    def base_path(self) -> str:
        """The net's train_val, reading the validation split in its TEST phase."""
        return self.path("train_val.prototxt")

    @property
    def test_path(self) -> str:
        """The same net reading the test split (final figures only)."""
        return self.path("test.prototxt")

    @property
    def lr_factor(self) -> float:
        """Retraining learning rate as a fraction of the net's own (pruning, fine-tuning, control alike)."""
        return self.schedule.lr_factor

    @property
    def ref_iters(self) -> int:
        return self.schedule.reference_iters if self.schedule.reference_iters is not None else 0

    def _chosen(self) -> bool:
        """Whether ``choose`` has run: the schedule every stage follows is the run's, whoever asks."""
        return bool(self.state.get("choose", {}).get("done"))

    def _readable(self, stage: str) -> None:
        if self.stage is not None and stage not in self.reads:
            raise InternalError("stage %r reads %r, which it does not declare in the stage table (reads: %s)"
                                % (self.stage, stage, ", ".join(self.reads) or "nothing"))

    def done(self, stage: str) -> bool:
        self._readable(stage)
        return bool(self.state.get(stage, {}).get("done"))

    def out(self, stage: str):
        """The record of an earlier stage this one declares it reads (the table guarantees it ran first)."""
        self._readable(stage)
        return self._record(stage)

    def _record(self, stage: str):
        kind = self.records.get(stage)
        return kind.of(self.state[stage]) if kind else self.state[stage]

    def record(self) -> RunRecord:
        s = self.schedule
        return RunRecord(self.src.name, bool(self.src.paper), self.preset, self.command, self.opts.seed, self.run_dir,
                         self.info, self.schedule_doc, self.schedule_source, s.description, s.rounds,
                         s.iters_per_round, s.finetune_iters, s.lr_factor, self.snapshot_every, tuple(self.src.origin),
                         tuple(self.src.changes), dict(self.state), tuple(self.stages),
                         {n: self.path(f) for n, f in self.folders.items()},
                         {n: self._record(n) for n in self.stages if self.state.get(n, {}).get("done")})


def indent(text: str, pad: str = "  ") -> str:
    return "\n".join(pad + line for line in text.splitlines())
