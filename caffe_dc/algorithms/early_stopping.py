"""When to stop training the reference: validation accuracy stopped improving (early stopping).

The rule, as a schedule states it (``reference_eval_every`` E,
``reference_patience`` K, ``reference_iters`` the cap):

* the net is evaluated on the validation split every E iterations (at E,
  2E, ...; and at the cap if E does not divide it);
* an evaluation is a *new best* when its accuracy is strictly higher than
  every earlier one (a tie is not progress: on a finite split the same count
  comes back often, and counting ties would let a flat curve run on);
* training stops at the K-th consecutive evaluation without a new best, or
  at the cap, whichever comes first;
* the model kept is the best one, not the one at the stopping point. The
  K evaluations after the best did not beat it, so the stopping point is no
  better on the validation split and has trained K·E iterations more for
  nothing; keeping the best is the conventional choice. It is a choice made
  on the validation split, which the reference's validation figure then
  favours a little (a maximum over evaluations); the final figures are
  counted on the test split, which took no part in it.

``decide`` is a pure function of the evaluations so far: a run resumed after
a kill restores its evaluations with its snapshot and replays the same
decisions, so it stops at the same iteration with the same model.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Tuple

from caffe_dc.base.errors import InputError

PATIENCE = "patience"
CAP = "cap"


class Decision(NamedTuple):
    stop: bool
    reason: Optional[str]        # PATIENCE, CAP, or None while training goes on
    best_iter: Optional[int]     # iteration of the best evaluation so far (None before any)
    best: Optional[float]        # its accuracy
    since_best: int              # evaluations after the best, none of them better
    last_iter: int               # iteration of the latest evaluation (0 before any)


class EarlyStopping(NamedTuple):
    eval_every: int
    patience: int
    max_iters: int

    def check(self) -> "EarlyStopping":
        for what, v in (("eval_every", self.eval_every), ("patience", self.patience), ("max_iters", self.max_iters)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError("early stopping: %s must be an integer >= 1, got %r" % (what, v))
        return self

    def eval_iters(self) -> Tuple[int, ...]:
        """Where the evaluations fall when nothing stops the run early."""
        its = list(range(self.eval_every, self.max_iters + 1, self.eval_every))
        if not its or its[-1] != self.max_iters:
            its.append(self.max_iters)
        return tuple(its)

    def decide(self, evaluations: Sequence[Tuple[int, float]]) -> Decision:
        """The decision after ``evaluations`` [(iteration, accuracy), ...], in training order."""
        best_iter, best, since = None, None, 0
        last = 0
        for it, acc in evaluations:
            if best is None or acc > best:
                best_iter, best, since = int(it), float(acc), 0
            else:
                since += 1
            last = int(it)
        if best is not None and since >= self.patience:
            return Decision(True, PATIENCE, best_iter, best, since, last)
        if last >= self.max_iters:
            return Decision(True, CAP, best_iter, best, since, last)
        return Decision(False, None, best_iter, best, since, last)

    def describe(self) -> str:
        return ("early stopping: validation accuracy every %d iterations, stop after %d without a new best "
                "or at %d; the best is kept" % (self.eval_every, self.patience, self.max_iters))

    def to_dict(self) -> dict:
        return {"eval_every": self.eval_every, "patience": self.patience, "max_iters": self.max_iters}


def stopping_point(evaluations: Sequence[Tuple[int, float]], rule: EarlyStopping) -> Decision:
    """Feed ``evaluations`` one at a time, as training would, and return the first decision to stop
    (or the decision after the last one if none stops)."""
    d = rule.decide([])
    for n in range(1, len(evaluations) + 1):
        d = rule.decide(evaluations[:n])
        if d.stop:
            break
    return d
