"""birdkeras: BirdCLEF bird-sound classifiers in TensorFlow/Keras.

One module per stage of the flow:

    errors         UserError: the base of every error caused by bad user input
    config         the run configuration's schema; config_loader: YAML, base:, --set
    layout         each Kaggle download's folders, metadata files and columns
    synth          synthetic BirdCLEF tree for tests and the demo (plan, render, metadata)
    audio          decode, down-mix, resample (soundfile + soxr)
    sources        each Kaggle download's metadata -> one normalised table
    manifest       hygiene, class balancing, folds, label map
    tfrecord       the record format and shard names; shards: resumable build, verify
    data           tf.data pipeline; mixing: batch-level waveform augmentation
    features       in-model log-mel front end; augment: SpecAugment masks
    models         EfficientNet backbones and heads
    train          the trainer; optimization: losses, LR schedule, optimizer;
                   callbacks: validation, checkpoints; distribute: strategies;
                   stages: multi-stage runs (pre-train, fine-tune, self-training rounds)
    metrics        official metrics; tracking: W&B and run logs; plots: every figure
    soundscapes    labelled soundscape tables
    pseudolabel    teachers' soft labels for soundscape windows -> shards
    embedders      frozen embedding models (Perch v2 SavedModel, a birdkeras model)
    embed          per-window embeddings -> shards; heads: probe, MLP, sequence head
    route          train the embedding route's heads; route_tuning: out-of-fold tuning;
                   route_runtime: run a trained route in predict
    export         SavedModel / TFLite / ONNX / OpenVINO with an FFT-free front end;
                   quantize: int8 CNN calibrated on training windows
    windows        inference audio in: files -> windows, decoded ahead in threads
    runtimes       one model in one runtime (Keras, SavedModel, TFLite, ONNX Runtime,
                   OpenVINO)
    postprocess    smoothing, file scaling, the route's cross-window steps (numpy)
    submission     submission, long table and Raven outputs
    infer          predict: score files, then write outputs (one file or sharded parts)
    beamrun        shard jobs (TFRecords, pseudo-labels, embeddings, predict) on Beam
    evaluate       a submission vs labelled soundscapes: official metrics, plots
    kaggle         Kaggle download / publish, and the notebook environment
"""

__version__ = "0.1.0"
