"""Where to draw the line: thresholds that turn scores into 0/1 labels, and a calibrated scale.

An image is flagged (label 1) when its score is strictly above the threshold. Rules:

- ``VALUE`` (e.g. ``200``): a fixed value, as the course's earlier edition (squared error > 200);
- ``fpr:A`` (e.g. ``fpr:0.01``, the default): at most a fraction ``A`` of the held-out normal
  training images is flagged; needs no anomaly labels;
- ``top:Q`` (e.g. ``top:0.05``): the fraction ``Q`` of the scored images with the highest scores
  (a contamination estimate);
- ``f1``: the threshold with the best F1 against given labels: for analysis only, since it looks
  at the answers.

The calibrated scale is the fraction of held-out normal images that score lower: 0.99 means
"higher than 99% of normal images", whatever the detector.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_curve

from oddeye.errors import OddeyeError

DEFAULT_RULE = "fpr:0.01"
RULES_HELP = "VALUE (fixed), fpr:A (held-out false-positive rate), top:Q (fraction flagged) or f1 (labels)"


@dataclass(frozen=True)
class Threshold:
    """A threshold and how it was chosen; images scoring strictly above ``value`` are flagged."""

    rule: str  # as given: "200", "fpr:0.01", "top:0.05", "f1"
    value: float
    basis: str  # what it was chosen on, in words
    uses_labels: bool = False  # True: chosen with the answers (analysis only)

    def flag(self, scores: np.ndarray) -> np.ndarray:
        """0/1 labels (int8): 1 where the score is above the threshold."""
        return (np.asarray(scores) > self.value).astype(np.int8)

    def describe(self) -> str:
        """'threshold 12.3 (fpr:0.01, 350 held-out normal training images, ...)'."""
        return f"threshold {self.value:.6g} {self.how()}"

    def how(self) -> str:
        note = "; chosen with the labels: for analysis only" if self.uses_labels else ""
        return f"({self.rule}, {self.basis}{note})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "model.json") -> Threshold:
        try:
            return cls(str(d["rule"]), float(d["value"]), str(d["basis"]), bool(d.get("uses_labels", False)))
        except (KeyError, TypeError, ValueError) as e:
            raise OddeyeError(f"{source}: expected a threshold record, found a problem: {e}") from None


def parse_rule(text: str) -> tuple[str, float]:
    """'200' -> ('value', 200.0); 'fpr:0.01' -> ('fpr', 0.01); 'top:0.05'; 'f1' -> ('f1', nan)."""
    text = text.strip().lower()
    if text == "f1":
        return "f1", float("nan")
    kind, sep, raw = text.partition(":")
    if not sep:
        kind, raw = "value", text
    try:
        param = float(raw)
    except ValueError:
        param = float("nan")
    if kind not in ("value", "fpr", "top") or not np.isfinite(param):
        raise OddeyeError(f"threshold: expected {RULES_HELP}; found {text!r}")
    if kind in ("fpr", "top") and not 0.0 <= param < 1.0:
        raise OddeyeError(f"threshold {text!r}: expected a fraction in [0, 1), found {param:g}")
    return kind, param


def choose_threshold(
    rule: str,
    *,
    heldout: np.ndarray | None = None,
    heldout_basis: str = "held-out normal training images",
    scores: np.ndarray | None = None,
    labels: np.ndarray | None = None,
) -> Threshold:
    """The threshold ``rule`` asks for, from the held-out normal scores, the scored set or labels."""
    kind, param = parse_rule(rule)
    if kind == "value":
        return Threshold(rule, param, "a fixed value")
    if kind == "fpr":
        if heldout is None or len(heldout) == 0:
            raise OddeyeError(
                f"threshold {rule!r} needs the held-out normal training images' scores, which a run "
                "keeps (give the run; runs made before oddeye kept them have none)"
            )
        value = fpr_threshold(np.asarray(heldout, dtype=np.float64), param)
        achieved = float(np.mean(heldout > value))
        basis = f"{len(heldout)} {heldout_basis}, false-positive rate {achieved:.4f}"
        if param > 0 and len(heldout) * param < 1:
            basis += f"; rough: resolving {param:g} takes at least {math.ceil(1 / param)} held-out images"
        return Threshold(rule, value, basis)
    if scores is None or len(scores) == 0:
        raise OddeyeError(f"threshold {rule!r} needs the scored images")
    scores = np.asarray(scores, dtype=np.float64)
    if kind == "top":
        value = top_threshold(scores, param)
        return Threshold(rule, value, f"the top {param:.2%} of {len(scores)} scored images")
    if labels is None:
        raise OddeyeError("threshold 'f1' needs labels (--labels)")
    value, f1 = f1_threshold(scores, np.asarray(labels))
    return Threshold(rule, value, f"best F1 {f1:.4f} on {len(scores)} labelled images", uses_labels=True)


def fpr_threshold(heldout: np.ndarray, fpr: float) -> float:
    """A threshold with at most ``fpr`` of the held-out scores strictly above it, flagging as many
    as that allows: halfway between the highest score that stays unflagged and the next one up
    (above the highest by half the gap below it when none may be flagged), so that no held-out
    score sits on the line, where a rounding difference (another engine) could flip its flag."""
    h = np.sort(heldout)
    allowed = int(np.floor(fpr * len(h) + 1e-9))  # held-out images that may be flagged
    value = float(h[len(h) - 1 - min(allowed, len(h) - 1)])
    above, below = h[h > value], h[h < value]
    if above.size:
        return float((value + above.min()) / 2)
    if below.size:
        return float(value + (value - below.max()) / 2)
    return value


def top_threshold(scores: np.ndarray, fraction: float) -> float:
    """A value with (ties aside) the ``fraction`` highest scores strictly above it."""
    s = np.sort(scores)[::-1]
    k = min(int(round(fraction * len(s))), len(s) - 1)
    return float(s[k])


def f1_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) maximising F1; scikit-learn's curve flags ``>=``, ours ``>``, hence nextafter."""
    precision, recall, cuts = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))[:-1]
    best = int(np.argmax(f1))
    return float(np.nextafter(cuts[best], -np.inf)), float(f1[best])


def calibrate(scores: np.ndarray, heldout: np.ndarray) -> np.ndarray:
    """Fraction of held-out normal scores strictly lower than each score (0..1)."""
    h = np.sort(np.asarray(heldout, dtype=np.float64))
    return np.searchsorted(h, np.asarray(scores, dtype=np.float64), side="left") / len(h)
