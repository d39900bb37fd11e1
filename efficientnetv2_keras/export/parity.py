"""Parity of an exported model with the Keras model it came from, and the thresholds that fail an export.

Both run on the same sample images; the report gives three numbers, each with a limit per mode:
  * max |dp|: the largest absolute difference of any class probability on any sample,
  * mean TV: the total-variation distance between the two probability vectors (half their L1
    distance: the share of probability mass the export moves, 0 = same, 1 = disjoint), averaged
    over the samples,
  * top-1 agreement: the share of samples on which both pick the same class.
The limits are sanity limits, picked from measurements (README "Export"): they accept the expected
quantization error and fail a broken export: wrong preprocessing, a training-mode graph, a failed
calibration (pixels in [0, 1], blank images), a corrupted quantization scale. A quantized model's
worst sample can move a lot, so int8 is judged mostly on the mean TV and top-1 agreement; the mean
TV also fails a broken classifier scale that keeps almost every argmax (top-1 agreement 99 %). The limits do
not replace measuring the quantized model's accuracy on your validation set; pass `thresholds=` to
tighten them.

Top-1 agreement counts a sample as agreeing when the exported model's top class is the Keras top
class or is tied with it in the Keras probabilities (within `TIE_TOLERANCE`): an untrained model
whose probabilities are all ~1/classes must not fail an fp32 export on rounding noise.
"""

import dataclasses
import math
import typing

import numpy as np

TIE_TOLERANCE = 1e-5


class Thresholds(typing.NamedTuple):
    """The limits one export mode must meet; each can fail it."""

    max_abs_diff: float  # on any class probability of any sample
    min_top1_agreement: float  # share of samples, 0..1
    max_mean_tv: float  # mean total-variation distance of the probability vectors, 0..1


NO_LIMITS = Thresholds(1.0, 0.0, 1.0)

# Measured on B0 over the 360 test digits (README "Export"): the trained digits demo (48 px, 98.3 %
# accurate) / the random-weight test model (64 px, its head fitted to 76 %), max |dp|, mean TV, top-1:
#   SavedModel, TFLite fp32, ONNX: <= 2e-6 / 1.3e-5, <= 2e-7 / 1.6e-6, 100 % (float sums reordered).
#   float16: 2.4e-3 / 4.7e-3, 2e-4 / 9e-4, 100 %.  dynamic_int8: 0.04 / 0.17, 0.003 / 0.026, 100 / 96.4 %.
#   int8: 0.25 / 0.41, 0.042 / 0.076, 99.2 / 90.3 %.
# Broken int8 exports (trained / random): calibrated on [0, 1] pixels or black images: mean TV 0.82 /
# 0.80-0.82, top-1 11 / 10 %; the first conv's weight scales x2: 0.42 / 0.72, top-1 63 / 26 %; the
# classifier's weight scales / 4: 0.54 / 0.47 with top-1 98.9 / 89.2 % (only the mean TV catches it).
PARITY_THRESHOLDS = {
    "saved_model": Thresholds(1e-4, 1.0, 1e-4),
    "onnx": Thresholds(1e-4, 1.0, 1e-4),
    "none": Thresholds(1e-4, 1.0, 1e-4),
    "float16": Thresholds(0.05, 0.95, 0.01),
    "dynamic_int8": Thresholds(0.5, 0.90, 0.08),
    "int8": Thresholds(0.9, 0.85, 0.25),
}


class ExportParityError(RuntimeError):
    """The exported model's outputs differ from the Keras model's beyond the mode's thresholds."""

    def __init__(self, message, reports):
        super().__init__(message)
        self.reports = tuple(reports)


@dataclasses.dataclass(frozen=True)
class ParityReport:
    """How closely one exported signature reproduces the Keras model on `num_samples` images."""

    signature: str  # e.g. "tflite int8", "saved_model serving_default"
    mode: str  # a key of PARITY_THRESHOLDS
    num_samples: int
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    max_abs_diff_limit: float
    min_top1_agreement: float
    compared: str  # "probabilities", or "softmax of outputs" when the model returns logits/features
    keras_confidence: float = 1.0  # mean top-1 probability of the Keras model on the samples
    num_classes: int = 0
    mean_tv: float = 0.0  # mean total-variation distance of the probability vectors
    max_mean_tv: float = 1.0

    @property
    def thresholds(self):
        return Thresholds(self.max_abs_diff_limit, self.min_top1_agreement, self.max_mean_tv)

    @property
    def near_uniform(self):
        """The Keras model barely prefers any class (untrained?): top-1 agreement means little."""
        return self.num_classes > 1 and self.keras_confidence < min(0.5, 2.0 / self.num_classes)

    @property
    def failures(self):
        """The limits this export misses, in words; empty when it passed."""
        failed = []
        if not self.max_abs_diff <= self.max_abs_diff_limit:
            failed.append(f"max |dp| {self.max_abs_diff:.3g} > {self.max_abs_diff_limit:.3g}")
        if not self.mean_tv <= self.max_mean_tv:
            failed.append(f"mean TV {self.mean_tv:.3g} > {self.max_mean_tv:.3g}")
        if not self.top1_agreement >= self.min_top1_agreement:
            failed.append(f"top-1 agreement {self.top1_agreement:.1%} < {self.min_top1_agreement:.0%}")
        return failed

    @property
    def passed(self):
        return not self.failures

    def __str__(self):
        verdict = "ok" if self.passed else "FAILED: " + "; ".join(self.failures)
        return (
            f"{self.signature:<26} n={self.num_samples:<4} max|dp|={self.max_abs_diff:.2e} "
            f"(limit {self.max_abs_diff_limit:.0e})  mean TV={self.mean_tv:.1e} (limit {self.max_mean_tv:.0e})  "
            f"top-1 agree={self.top1_agreement:6.1%} (min {self.min_top1_agreement:.0%})  [{verdict}]"
        )


def thresholds_for(mode, thresholds=None):
    """The `Thresholds` for `mode`, with `thresholds` overriding the defaults.

    thresholds: None (the mode's `PARITY_THRESHOLDS`), a `Thresholds`, a (max_abs_diff,
      min_top1_agreement[, max_mean_tv]) sequence (a missing mean-TV limit keeps the mode's), or a
      dict mode -> one of those.
    """
    if isinstance(thresholds, dict):
        thresholds = thresholds.get(mode)
    default = PARITY_THRESHOLDS[mode]
    if thresholds is None:
        return default
    values = tuple(thresholds)
    if len(values) == 2:
        values += (default.max_mean_tv,)
    if len(values) != 3:
        raise ValueError(
            f"thresholds for {mode!r} must be (max_abs_diff, min_top1_agreement[, max_mean_tv]), got {thresholds!r}."
        )
    limit, top1, tv = (float(v) for v in values)
    if not (limit >= 0 and 0 <= top1 <= 1 and tv >= 0):
        raise ValueError(
            f"thresholds for {mode!r} must be (max_abs_diff >= 0, min_top1_agreement in [0, 1], "
            f"max_mean_tv >= 0), got {thresholds!r}."
        )
    return Thresholds(limit, top1, tv)


def _softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def _are_probabilities(x):
    return bool(np.all(x >= 0) and np.allclose(x.sum(axis=-1), 1.0, atol=1e-3))


def compare(reference, exported, *, signature, mode, thresholds=None):
    """Builds the `ParityReport` of `exported` against `reference` (Keras) outputs, [N, classes]."""
    reference = np.asarray(reference, np.float64).reshape(len(reference), -1)
    exported = np.asarray(exported, np.float64).reshape(len(exported), -1)
    if reference.shape != exported.shape:
        raise ValueError(
            f"The exported model returns shape {exported.shape}, the Keras model {reference.shape}."
        )
    compared = "probabilities"
    if not _are_probabilities(reference):
        compared = "softmax of outputs"
        reference, exported = _softmax(reference), _softmax(exported)
    diff = np.abs(reference - exported)
    if not np.all(np.isfinite(exported)):
        max_diff = mean_diff = mean_tv = math.inf
    else:
        max_diff, mean_diff = float(diff.max()), float(diff.mean())
        mean_tv = float(0.5 * diff.sum(axis=-1).mean())
    exported_top = exported.argmax(axis=-1)
    rows = np.arange(len(reference))
    agree = reference[rows, exported_top] >= reference.max(axis=-1) - TIE_TOLERANCE
    limits = thresholds_for(mode, thresholds)
    return ParityReport(
        signature=signature,
        mode=mode,
        num_samples=len(reference),
        max_abs_diff=max_diff,
        mean_abs_diff=mean_diff,
        top1_agreement=float(agree.mean()),
        max_abs_diff_limit=limits.max_abs_diff,
        min_top1_agreement=limits.min_top1_agreement,
        compared=compared,
        keras_confidence=float(reference.max(axis=-1).mean()),
        num_classes=reference.shape[-1],
        mean_tv=mean_tv,
        max_mean_tv=limits.max_mean_tv,
    )


def raise_if_failed(reports, what):
    failed = [r for r in reports if not r.passed]
    if failed:
        lines = "\n  ".join(str(r) for r in failed)
        hint = ""
        if any(r.near_uniform for r in failed):
            hint = (
                f"The Keras model's probabilities are nearly uniform (mean top-1 probability "
                f"{failed[0].keras_confidence:.3g} over {failed[0].num_classes} classes; untrained weights?), so "
                "tiny quantization errors reorder its classes: train it first, or pass "
                "thresholds=export.NO_LIMITS (tools/export.py: --max_abs_diff=1 --min_top1_agreement=0 "
                "--max_mean_tv=1) to export it anyway.\n"
            )
        raise ExportParityError(
            f"Parity check failed for {what}; nothing was written.\n  {lines}\n{hint}"
            "A large difference with near-chance top-1 agreement means a broken export; a modest miss "
            "in a quantized mode means the model is sensitive to quantization: try more or more "
            "representative calibration data, a milder mode (float16, dynamic_int8), or pass "
            "looser thresholds= if you have measured the accuracy you get.",
            reports,
        )
