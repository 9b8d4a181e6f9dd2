"""Offline side of Kestrel: data loading, training, calibration, evaluation and the retrain job."""
