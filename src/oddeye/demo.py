"""The built-in demo: the homework pipeline end to end on scikit-learn's digits (ships offline)."""

from __future__ import annotations

from pathlib import Path

import oddeye
from oddeye.data.loaders import write_homework_digits


def run_demo(
    out: Path,
    digit: int = 0,
    detector: str = oddeye.DEFAULT_DETECTOR,
    epochs: int | None = None,
    progress: bool = True,
) -> oddeye.Evaluation:
    """Write digits in the homework layout (one digit normal), train, score, evaluate, print."""
    paths = write_homework_digits(out / "data", normal_digit=digit)
    print(f"data: digit {digit} is normal, the other nine digits are anomalies -> {out / 'data'}")
    run, csv = out / "run", out / "prediction.csv"
    det = oddeye.train(paths["train"], detector, run, force=True, epochs=epochs, progress=progress)
    print(f"trained {detector} on {det.n_train_images_} images ({det.training_summary()}) -> {run}")
    scores = oddeye.score(det, paths["test"], csv, progress=progress).scores
    result = oddeye.evaluate(csv, paths["labels"])
    print(f"scored {result.n_normal + result.n_anomalous} test images -> {csv}\n")
    print(result.to_text())
    if det.threshold_ is not None:
        flagged = det.threshold_.flag(scores)
        print(f"\n{det.threshold_.describe()}: flags {int(flagged.sum())} of {len(flagged)} test images")
    report = oddeye.report(
        det, paths["test"], out / "report.html", scores=scores, labels=paths["labels"], progress=progress
    )
    print(f"report: {report.html} (figures in {report.html.stem}_figures/)")
    print(f"\nnext: oddeye evaluate {csv} --labels {paths['labels']}")
    return result
