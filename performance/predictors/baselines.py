"""One-number baselines as predictors: multiply-adds, parameters and zero-cost proxies
(``nascore.performance.proxies``).

Each is a line fitted by least squares from its number to the label on the fitting archs: its ranking is the
number's (or its reverse, when the fitted slope is negative), and the line gives predictions in the label's units
so that their mean absolute error compares with a learned predictor's. An arch whose number is missing (a proxy
that was not finite) is predicted the fitting labels' mean.
"""
from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import torch

from nascore import hookimpl
from nascore.predictor import Predictor, Sample, State, labels
from nascore.progress import Progress, no_progress


class Baseline(Predictor):
    """A predictor that is a line through one number of each arch (``value``)."""

    def __init__(self, config=None):
        super().__init__(config)
        self.slope, self.intercept, self._mean = 0.0, 0.0, 0.0

    @abstractmethod
    def value(self, sample: Sample) -> float | None:
        """The one number of ``sample`` the line goes through (None when it has none)."""

    def _values(self, samples: Sequence[Sample]) -> list[float | None]:
        return [v if v is not None and math.isfinite(v) else None for v in map(self.value, samples)]

    def fit(self, samples: Sequence[Sample], generator: torch.Generator, progress: Progress = no_progress) -> None:
        y = labels(samples)
        known = [(x, float(t)) for x, t in zip(self._values(samples), y) if x is not None]
        self._mean = self.intercept = float(y.mean())
        self.slope = 0.0
        if len(known) >= 2:
            xs = torch.tensor([x for x, _ in known], dtype=torch.float64)
            ts = torch.tensor([t for _, t in known], dtype=torch.float64)
            var = float(((xs - xs.mean()) ** 2).sum())
            if var > 0:
                self.slope = float(((xs - xs.mean()) * (ts - ts.mean())).sum()) / var
                self.intercept = float(ts.mean()) - self.slope * float(xs.mean())

    def predict(self, samples: Sequence[Sample]) -> list[float]:
        return [self.slope * x + self.intercept if x is not None else self._mean for x in self._values(samples)]

    def state(self) -> State:
        return {"slope": self.slope, "intercept": self.intercept, "mean": self._mean}

    def load_state(self, state: State) -> None:
        self.slope, self.intercept, self._mean = float(state["slope"]), float(state["intercept"]), float(state["mean"])


class MacsBaseline(Baseline):
    """log10 of the backbone's multiply-adds."""

    name: ClassVar[str] = "macs"

    def value(self, sample: Sample) -> float | None:
        return math.log10(sample.macs) if sample.macs > 0 else None


class ParamsBaseline(Baseline):
    """log10 of the backbone's parameter count."""

    name: ClassVar[str] = "params"

    def value(self, sample: Sample) -> float | None:
        return math.log10(sample.params) if sample.params > 0 else None


class SynflowBaseline(Baseline):
    """The SynFlow zero-cost proxy (its log) of the untrained backbone."""

    name: ClassVar[str] = "synflow"

    def value(self, sample: Sample) -> float | None:
        return sample.proxies.get("synflow")


class NaswotBaseline(Baseline):
    """The NASWOT zero-cost proxy (log |det K|) of the untrained backbone."""

    name: ClassVar[str] = "naswot"

    def value(self, sample: Sample) -> float | None:
        return sample.proxies.get("naswot")


@hookimpl
def nascore_predictors():
    return [MacsBaseline, ParamsBaseline, SynflowBaseline, NaswotBaseline]
