"""Last step of the training pipeline: the run summary and the HTML report."""

from typing import Any

from kfp.dsl import HTML, Artifact, Dataset, Input, Model, Output

from components.stage import stage

HEADLINE_METRICS = ("roc_auc", "pr_auc", "f1", "precision", "recall", "brier", "ece")


def training_summary(
    *,
    run_id: str,
    rows: dict[str, int],
    model_info: dict[str, Any],
    candidates: list[dict[str, Any]],
    evaluation: dict[str, Any],
    registration: dict[str, Any],
) -> dict[str, Any]:
    """The run's outcome in the shape `submit.py train --json` prints."""
    champion = evaluation.get("champion_metrics")
    comparison = evaluation.get("comparison") or {}
    interval = evaluation.get("interval") or {}
    metrics = evaluation["metrics"]
    return {
        "run_id": run_id,
        "status": "succeeded",
        "model_version": registration["version"],
        "promoted": registration["promoted"],
        "promotion_reason": registration["promotion_reason"],
        "best_model": model_info["best_model"],
        "threshold": round(float(model_info["threshold"]), 4),
        "resampling": model_info.get("resampling", "smote"),
        "calibration": model_info.get("calibration", "none"),
        "metrics": {k: round(metrics[k], 4) for k in HEADLINE_METRICS},
        "interval": {
            "metric": interval.get("metric"),
            "low_high": _rounded(interval.get("low_high")),
            "samples": interval.get("samples"),
        },
        "probabilities": {
            "mean_probability": round(metrics["mean_probability"], 4),
            "churn_rate": round(metrics["churn_rate"], 4),
            "uncalibrated": {k: round(v, 4) for k, v in evaluation["uncalibrated"].items()},
        },
        "champion": (
            {
                "version": evaluation["champion_version"],
                "metrics": {k: round(champion[k], 4) for k in HEADLINE_METRICS},
                "comparison": {
                    "rows": comparison["rows"],
                    "test_rows": comparison["test_rows"],
                    "champion_trained_on": comparison["champion_trained_on"],
                    "unseen_only": comparison["unseen_only"],
                    "note": comparison["note"],
                    "difference": round(comparison["difference"], 4),
                    "difference_interval": _rounded(comparison["difference_interval"]),
                },
            }
            if champion
            else None
        ),
        "cv": candidates,
        "rows": rows,
    }


def _rounded(interval: list[float] | None) -> list[float] | None:
    return [round(v, 4) for v in interval] if interval else None


@stage
def summarize_training(
    raw: Input[Dataset],
    rejects: Input[Dataset],
    train: Input[Dataset],
    test: Input[Dataset],
    model: Input[Model],
    candidates: Input[Artifact],
    evaluation: Input[Artifact],
    predictions: Input[Dataset],
    registration: Input[Artifact],
    run_id: str,
    summary: Output[Artifact],
    report: Output[HTML],
) -> None:
    """Write the run summary (JSON) and the self-contained HTML report."""
    import json
    from pathlib import Path

    import pandas as pd

    from components.reports.training import training_summary
    from components.reports.training_report import render_training_report

    def count(artifact) -> int:
        return int(artifact.metadata["rows"])  # metadata numbers come back as floats

    evaluation_data = json.loads(Path(evaluation.path).read_text())
    result = training_summary(
        run_id=run_id,
        rows={
            "read": count(raw),
            "duplicates": int(rejects.metadata["duplicates"]),
            "rejected": count(rejects),
            "train": count(train),
            "test": count(test),
        },
        model_info=dict(model.metadata),
        candidates=json.loads(Path(candidates.path).read_text()),
        evaluation=evaluation_data,
        registration=json.loads(Path(registration.path).read_text()),
    )
    scored = pd.read_parquet(predictions.path)
    interval = result["interval"]
    champion = result["champion"]
    html = render_training_report(
        title=f"Churn model v{result['model_version']}: training run {run_id}",
        summary={
            "model version": result["model_version"],
            "best model": result["best_model"],
            "resampling": result["resampling"],
            "calibration": result["calibration"],
            "promoted": "yes" if result["promoted"] else "no",
            "why": result["promotion_reason"],
            **{f"rows {k}": v for k, v in result["rows"].items()},
            **{f"test {k}": v for k, v in result["metrics"].items()},
            **(
                {f"test {interval['metric']} 95% interval": interval["low_high"]}
                if interval["low_high"]
                else {}
            ),
            "mean probability / churn rate": (
                f"{result['probabilities']['mean_probability']} / "
                f"{result['probabilities']['churn_rate']}"
            ),
            **(
                {
                    "champion compared": champion["comparison"]["note"],
                    "difference vs champion": champion["comparison"]["difference"],
                    "difference 95% interval": champion["comparison"]["difference_interval"],
                }
                if champion
                else {}
            ),
        },
        y_true=scored["label"].to_numpy(),
        y_prob=scored["probability"].to_numpy(),
        y_prob_raw=(
            scored["raw_probability"].to_numpy() if result["calibration"] != "none" else None
        ),
        threshold=result["threshold"],
        candidates=result["cv"],
        feature_importance=evaluation_data["feature_importance"],
        attribution_importance=evaluation_data.get("attribution_importance"),
        champion_prob=(
            scored["champion_probability"].to_numpy() if "champion_probability" in scored else None
        ),
    )
    Path(report.path).write_text(html, encoding="utf-8")
    result["report"] = report.uri
    Path(summary.path).write_text(json.dumps(result, indent=2))
    # The whole summary as metadata (headline metrics also flat, for the console's columns):
    # `submit.py train --wait` reads it from the run's task details on Vertex.
    summary.metadata.update(result | result["metrics"])
