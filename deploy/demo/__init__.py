"""One-command demo: train on NSL-KDD, start the embedded broker and the worker, replay KDDTest+."""
