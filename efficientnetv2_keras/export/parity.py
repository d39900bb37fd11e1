"""Parity of an exported model with the Keras model it came from, and the thresholds that fail an export.

Both run on the same sample images; the report gives the max (and mean) absolute difference of the
class probabilities and the top-1 agreement. The thresholds are sanity limits, picked from
measurements (README "Export"): they fail an export that is broken (wrong preprocessing, a
training-mode graph, a failed calibration: near-chance agreement) while accepting the expected
quantization error. They do not replace measuring the quantized model's accuracy on your validation
set; pass `thresholds=` to tighten them.

Top-1 agreement counts a sample as agreeing when the exported model's top class is the Keras top
class or is tied with it in the Keras probabilities (within `TIE_TOLERANCE`): an untrained model
whose probabilities are all ~1/classes must not fail an fp32 export on rounding noise.
"""

import dataclasses
import math

import numpy as np

TIE_TOLERANCE = 1e-5

# mode -> (max abs difference of probabilities allowed, min top-1 agreement). Measured on B0
# (digits, 360 test images; README "Export"): trained (95 % accurate) / random-weight test model:
#   SavedModel 2e-6 / 2e-8 (graph-mode fusions reorder float sums, so not exactly 0),
#   TFLite fp32 4e-6 / 1e-5, 100 % / 100 %;  float16 2e-3 / 6e-3, 100 % / 100 %;
#   dynamic_int8 0.07 / 0.17, 99.7 % / 98.1 %;  int8 0.56 / 0.54, 99.2 % / 93.3 %.
# A quantized model's worst sample can move a lot, so int8 is judged on top-1 agreement alone.
PARITY_THRESHOLDS = {
    "saved_model": (1e-4, 1.0),
    "onnx": (1e-4, 1.0),
    "none": (1e-4, 1.0),
    "float16": (0.05, 0.95),
    "dynamic_int8": (0.5, 0.90),
    "int8": (1.0, 0.85),
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

    @property
    def near_uniform(self):
        """The Keras model barely prefers any class (untrained?): top-1 agreement means little."""
        return self.num_classes > 1 and self.keras_confidence < min(0.5, 2.0 / self.num_classes)

    @property
    def passed(self):
        return self.max_abs_diff <= self.max_abs_diff_limit and self.top1_agreement >= self.min_top1_agreement

    def __str__(self):
        verdict = "ok" if self.passed else "FAILED"
        return (
            f"{self.signature:<32} n={self.num_samples:<4} max|dp|={self.max_abs_diff:.2e} "
            f"(limit {self.max_abs_diff_limit:.0e})  top-1 agree={self.top1_agreement:6.1%} "
            f"(min {self.min_top1_agreement:.0%})  [{verdict}]"
        )


def thresholds_for(mode, thresholds=None):
    """(max_abs_diff, min_top1) for `mode`, with `thresholds` overriding the defaults.

    thresholds: None, a (max_abs_diff, min_top1) pair for this mode, or a dict mode -> pair.
    """
    if isinstance(thresholds, dict):
        thresholds = thresholds.get(mode)
    if thresholds is None:
        return PARITY_THRESHOLDS[mode]
    limit, top1 = thresholds
    if not (limit >= 0 and 0 <= top1 <= 1):
        raise ValueError(
            f"thresholds for {mode!r} must be (max_abs_diff >= 0, min_top1_agreement in [0, 1]), "
            f"got {thresholds!r}."
        )
    return float(limit), float(top1)


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
        max_diff = mean_diff = math.inf
    else:
        max_diff, mean_diff = float(diff.max()), float(diff.mean())
    exported_top = exported.argmax(axis=-1)
    rows = np.arange(len(reference))
    agree = reference[rows, exported_top] >= reference.max(axis=-1) - TIE_TOLERANCE
    limit, top1 = thresholds_for(mode, thresholds)
    return ParityReport(
        signature=signature,
        mode=mode,
        num_samples=len(reference),
        max_abs_diff=max_diff,
        mean_abs_diff=mean_diff,
        top1_agreement=float(agree.mean()),
        max_abs_diff_limit=limit,
        min_top1_agreement=top1,
        compared=compared,
        keras_confidence=float(reference.max(axis=-1).mean()),
        num_classes=reference.shape[-1],
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
                "tiny quantization errors reorder its classes: train it first, or pass thresholds=(1, 0) "
                "(tools/export.py: --max_abs_diff=1 --min_top1_agreement=0) to export it anyway.\n"
            )
        raise ExportParityError(
            f"Parity check failed for {what}; nothing was written.\n  {lines}\n{hint}"
            "A large difference with near-chance top-1 agreement means a broken export; a modest miss "
            "in a quantized mode means the model is sensitive to quantization: try more or more "
            "representative calibration data, a milder mode (float16, dynamic_int8), or pass "
            "looser thresholds= if you have measured the accuracy you get.",
            reports,
        )
