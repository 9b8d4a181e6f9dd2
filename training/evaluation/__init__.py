"""How good a detector is: metrics on anomaly scores, plots, and the HTML report (no training code)."""
