"""Offline side of Kestrel: data loading, training, calibration, evaluation and the retrain job.

Package map (each layer imports only the ones below it; import-linter checks this):

* :mod:`training.cli` — ``python -m training``: argument parsing and the command bodies.
* :mod:`training.retrain` — the retrain job: data windows (files, Kafka, analyst verdicts), the
  promotion gate, its reports.
* :mod:`training.fit` — the whole fit: spec -> featurizer -> encoder -> classes -> centroids ->
  threshold. :mod:`training.evaluation` — metrics, plots and the HTML report.
* :mod:`training.crossfit_calibration` — the fit's cross-fitted path (few normals): fold models,
  the final model, out-of-fold scores.
* :mod:`training.trained_model` — one model before calibration: featurizer, encoder, classes,
  centroids, the input terms of its score.
* :mod:`training.fit_config` — the fit's settings (:class:`training.fit_config.FitConfig`, also
  importable from :mod:`training.fit`).
* :mod:`training.calibration`, :mod:`training.crossfit`, :mod:`training.score_terms` — centroids,
  radii, the threshold, the folds, the choice of the score's terms.
* :mod:`training.learning` — how the encoder learns: losses, sampling, outliers, the training loop.
* :mod:`training.config` (hyper-parameters), :mod:`training.data` (column and value checks).
"""
