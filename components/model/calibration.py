"""Calibrated churn probabilities: a fitted classifier followed by a fitted probability map.

Resampling (SMOTE) and class weights make a classifier's probabilities say more churn than
there is. The map back to honest probabilities is fitted on out-of-fold predictions of the
training split, the only predictions of training rows made by models that did not train on
them, so it never sees the test set and never learns from in-sample over-confidence.

scikit-learn's `CalibratedClassifierCV` cannot take those predictions: it either refits the
estimator once per fold itself (without SMOTE inside the folds, and at five extra fits) or,
with `FrozenEstimator`, calibrates on the final model's predictions of the rows it trained
on. So the map is fitted here, from the same out-of-fold predictions that choose the
decision threshold, and `CalibratedModel` applies it after the estimator. It is the last
step of the saved `Pipeline(preprocess, model)`, so `predict_proba` of the one saved model
is calibrated wherever it runs; `components.model.predict` scores its estimator with the
compiled tree kernel and then applies `calibrate`. Its import path is in every pickled
calibrated model: keep it.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss

METHODS = ("sigmoid", "isotonic")
# Probabilities of exactly 0 or 1 (a pure forest leaf) have no log-odds.
_EDGE = 1e-6


class ProbabilityCalibrator(BaseEstimator):
    """A monotone map from a model's P(churn) to a calibrated P(churn).

    `sigmoid` is Platt scaling on the log-odds (for gradient boosting and logistic
    regression, on the model's own raw score); `isotonic` is a step function, more
    flexible, needing more rows to be steady.
    """

    def __init__(self, method: str = "sigmoid") -> None:
        self.method = method

    def fit(self, probability: np.ndarray, label: np.ndarray) -> ProbabilityCalibrator:
        if self.method == "sigmoid":
            self.map_ = LogisticRegression(C=1e6).fit(_log_odds(probability), label)
        elif self.method == "isotonic":
            self.map_ = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
                probability, label
            )
        else:
            raise ValueError(f"calibration method must be one of {METHODS}, got {self.method!r}")
        return self

    def transform(self, probability: np.ndarray) -> np.ndarray:
        if self.method == "sigmoid":
            return self.map_.predict_proba(_log_odds(probability))[:, 1]
        return self.map_.predict(probability)


def _log_odds(probability: np.ndarray) -> np.ndarray:
    return logit(np.clip(probability, _EDGE, 1 - _EDGE)).reshape(-1, 1)


def choose_method(
    label: np.ndarray, oof_probability: np.ndarray, folds: list[np.ndarray]
) -> tuple[str, dict[str, float]]:
    """The method with the lower mean Brier score when each fold's out-of-fold predictions
    are calibrated by a map fitted on the other folds' (the CV folds of the search, so a
    customer's rows are never on both sides); and each method's score."""
    scores = {}
    for method in METHODS:
        losses = []
        for held_out in folds:
            rest = np.ones(len(label), dtype=bool)
            rest[held_out] = False
            fitted = ProbabilityCalibrator(method).fit(oof_probability[rest], label[rest])
            calibrated = fitted.transform(oof_probability[held_out])
            losses.append(brier_score_loss(label[held_out], calibrated))
        scores[method] = float(np.mean(losses))
    return min(METHODS, key=lambda m: scores[m]), scores


class CalibratedModel(ClassifierMixin, BaseEstimator):
    """A fitted binary classifier whose churn probability goes through a fitted calibrator.
    Both are fitted before they are put together; `fit` is not how this model is made."""

    def __init__(self, estimator: BaseEstimator, calibrator: ProbabilityCalibrator) -> None:
        self.estimator = estimator
        self.calibrator = calibrator

    @property
    def classes_(self) -> np.ndarray:
        return self.estimator.classes_

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def fit(self, x: np.ndarray, y: np.ndarray) -> CalibratedModel:
        # scikit-learn requires every estimator to have `fit`; refitting here would train
        # the calibrator on in-sample predictions, which is what this class exists to avoid.
        raise TypeError(
            "CalibratedModel is assembled from a fitted estimator and a calibrator fitted on "
            "out-of-fold predictions (components.train.fit_final); it is not refitted"
        )

    def calibrate(self, raw_probability: np.ndarray) -> np.ndarray:
        """The calibrated P(churn) of the estimator's P(churn)."""
        return self.calibrator.transform(raw_probability)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        churn = self.calibrate(self.estimator.predict_proba(x)[:, 1])
        return np.column_stack([1 - churn, churn])


# The names model files record for these classes, before issue 17's move and after it
# (components/calibration.py re-exports them): see components/model/features.py.
CalibratedModel.__module__ = ProbabilityCalibrator.__module__ = "components.calibration"
