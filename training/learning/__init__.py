"""How the encoder learns: losses, batch sampling, synthetic outliers, corruption, the objective and the loop.

Knows nothing of files, the registry, evaluation or the command line; :mod:`training.trained_model` drives it
(and :mod:`training.fit` asks its budget for the thread count).
"""
