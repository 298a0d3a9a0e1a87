"""birdkeras: BirdCLEF bird-sound classifiers in TensorFlow/Keras.

One folder per stage of the flow; each imports only from the stages above it in this
list (an import-linter `layers` contract in setup.cfg, checked by `make test`):

    errors, storage, logs       user errors; files local or gs://; the birdkeras logger
    metrics, postprocess, plots official metrics; numpy score post-processing; figures
    config/      schema (typed defaults, checks), loader (YAML, base:, --set), catalog
                 (each Kaggle download's folders, metadata and columns)
    audio/       io (find, decode, down-mix, resample, write), windows (cut, decode ahead)
    datasets/    sources (metadata readers), soundscapes (labelled soundscapes), manifest
    synth/       synthetic BirdCLEF tree for tests, the demo and benchmarks
    records/     format (TFRecord keys, encoding), shard_writer (resumable), shards
                 (build, verify), jobs (here or on Beam), pipeline (tf.data), mixing
    model/       frontend (Keras log-mel), mel (its numpy twin), specaugment, backbones,
                 classifier (heads), run_files (config + classes beside a model)
    train/       trainer, callbacks, optimization, distribute, tracking
    export/      convert (SavedModel/TFLite/ONNX/OpenVINO), int8, card, runtime
                 (one model in one runtime), keras_runtime, openvino_support
    embeddings/  frozen (Perch v2, a birdkeras model), extract (embed -> shards), heads,
                 fit (train the route), tuning (out-of-fold), runner (a route in predict)
    infer/       runners, scoring, predicting (predict, sharded), submission, evaluate
    selftrain/   pseudolabel, stages (multi-stage runs, self-training rounds)
    kaggle, demo, cli           Kaggle data in and out; `make demo`; the `birdkeras` command
"""

__version__ = "0.2.0"
