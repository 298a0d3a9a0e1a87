"""Inference: the models predict runs (`runners`), scoring files with them
(`scoring`), post-processed predictions to a submission, a long table and Raven tables
(`predicting`, `submission`), and a submission scored against labelled soundscapes
(`evaluate`).

    from birdkeras import infer
    report = infer.predict(["export/"], "test_soundscapes/", "submission.csv", "onnx")
"""

from birdkeras.infer.predicting import predict, predict_sharded  # noqa: F401 - entry points
