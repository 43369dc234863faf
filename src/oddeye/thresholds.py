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

This module is the one place where a threshold request becomes a threshold
(:func:`resolve_threshold`), where images are flagged (:meth:`Threshold.flag`) and where scores are
calibrated (:func:`calibrate`): the API, the command line, the server and the export all go through
it. It imports neither PyTorch nor FastAPI (a server of an exported model imports it).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from oddeye.errors import OddeyeError

DEFAULT_RULE = "fpr:0.01"
RULES_HELP = "VALUE (fixed), fpr:A (held-out false-positive rate), top:Q (fraction flagged) or f1 (labels)"
RULE_FORMS = {"value": "a value", "fpr": "fpr:A", "top": "top:Q", "f1": "f1"}  # by parse_rule's kind


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
        """'(fpr:0.01, 350 held-out normal training images, ...)': the rule and what it was chosen on."""
        note = "; chosen with the labels: for analysis only" if self.uses_labels else ""
        return f"({self.rule}, {self.basis}{note})"

    def __float__(self) -> float:
        """The value: PyOD's ``threshold_`` is this number."""
        return self.value

    def to_dict(self) -> dict[str, Any]:
        """The record saved in model.json and the ONNX metadata (rule, value, basis, uses_labels)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "model.json") -> Threshold:
        """The threshold a :meth:`to_dict` record describes; an OddeyeError naming ``source`` if it
        is incomplete."""
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


def rule_forms(kinds: Collection[str]) -> str:
    """('value', 'fpr') -> 'a value or fpr:A': the rule kinds in words, for a message."""
    forms = [RULE_FORMS[k] for k in kinds]
    return " or ".join(forms) if len(forms) < 3 else ", ".join(forms[:-1]) + " or " + forms[-1]


def resolve_threshold(
    request: Threshold | str | bool | None,
    *,
    saved: Threshold | None = None,
    heldout: np.ndarray | None = None,
    heldout_basis: str = "held-out normal training images",
    scores: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    allowed: Collection[str] | None = None,
    source: str = "model.json",
) -> Threshold | None:
    """The threshold ``request`` asks for, in every form a caller has it, so that the API, the
    command line and the server read a request alike:

    - None or False: none (no flags);
    - True or "": ``saved``, the model's own (an OddeyeError saying what to do when it has none,
      naming ``source``);
    - a :class:`Threshold`: that one, as it is;
    - a rule ('200', 'fpr:0.01', 'top:0.05', 'f1'): chosen now by :func:`choose_threshold` from
      ``heldout`` (the held-out normal scores), ``scores`` (the scored images) or ``labels``.

    ``allowed``: the rule kinds a caller takes ('value', 'fpr', 'top', 'f1'; default all); a rule
    of another kind is an OddeyeError (the server takes only a value or fpr:A, since it scores one
    request at a time and has no labels). It restricts rules only: a saved threshold is the model's
    and is used whatever its kind. A caller for whom "nothing asked" means "the saved one, if any"
    passes ``saved`` as the request."""
    if request is None or request is False:
        return None
    if isinstance(request, Threshold):
        return request
    if request is True or request == "":
        if saved is None:
            raise OddeyeError(
                f"{source}: this run has no saved threshold; give a rule (--threshold {DEFAULT_RULE})"
            )
        return saved
    if not isinstance(request, str):
        raise OddeyeError(f"threshold: expected {RULES_HELP}, found {type(request).__name__} {request!r}")
    kind, _ = parse_rule(request)
    if allowed is not None and kind not in allowed:
        raise OddeyeError(
            f"threshold {request.strip()!r}: expected {rule_forms(allowed)} here, found {RULE_FORMS[kind]}"
        )
    return choose_threshold(
        request, heldout=heldout, heldout_basis=heldout_basis, scores=scores, labels=labels
    )


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
                "keeps (give the run, --run RUN with evaluate; runs made before oddeye kept them have none)"
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
    from sklearn.metrics import precision_recall_curve  # here: a server, which never asks for f1, skips it

    precision, recall, cuts = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))[:-1]
    best = int(np.argmax(f1))
    return float(np.nextafter(cuts[best], -np.inf)), float(f1[best])


def calibrate(scores: np.ndarray, heldout: np.ndarray) -> np.ndarray:
    """Fraction of held-out normal scores strictly lower than each score (0..1)."""
    h = np.sort(np.asarray(heldout, dtype=np.float64))
    return np.searchsorted(h, np.asarray(scores, dtype=np.float64), side="left") / len(h)


def threshold_stats(t: Threshold, scores: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]:
    """The threshold's record (:meth:`Threshold.to_dict`), how many images it flags of how many, and
    with labels its precision, recall and false-positive rate."""
    flagged = t.flag(scores).astype(bool)
    stats: dict[str, Any] = {**t.to_dict(), "flagged": int(flagged.sum()), "n": len(scores)}
    if labels is not None:
        tp = int((flagged & (labels == 1)).sum())
        stats["precision"] = tp / max(int(flagged.sum()), 1)
        stats["recall"] = tp / max(int(labels.sum()), 1)
        stats["fpr"] = float(flagged[labels == 0].mean()) if (labels == 0).any() else None
    return stats


def threshold_rows(t: Threshold, scores: np.ndarray, labels: np.ndarray | None) -> list[tuple[str, str]]:
    """The threshold, how many it flags, and with labels its precision, recall and FPR."""
    s = threshold_stats(t, scores, labels)
    rows = [("threshold", f"{t.value:.6g} {t.how()}")]
    rows.append(("flagged", f"{s['flagged']} of {s['n']} ({s['flagged'] / max(s['n'], 1):.2%})"))
    if labels is not None:
        fpr = "n/a (no normal image)" if s["fpr"] is None else f"{s['fpr']:.4f}"
        at = f"precision {s['precision']:.4f}, recall {s['recall']:.4f}, FPR {fpr}"
        rows.append(("at the threshold", at))
    return rows
