"""Running a trained embedding route (`birdkeras.embeddings.fit`) in `predict`.

`RouteRunner(folder)` is a runner like `birdkeras.export.runtime.Runner`, with `score_file`: a file's
windows at once, because the sequence head reads a file's windows together. Per file:
the embedding model's embeddings and logits (mapped to the competition's classes) ->
the route's head, or its heads' blend (ONNX Runtime, or Keras with runtime "tf") -> the tuned steps the
config's `infer` section turns on (per-taxon temperature, site/hour prior, fusion with
the CNN the route was tuned with, the cross-window steps at their tuned strengths,
per-class thresholds). Paths recorded at training
(the embedding model, the CNN) can be replaced for another machine (`infer.embedder`,
`infer.route_cnn`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from birdkeras import config as config_lib
from birdkeras import postprocess
from birdkeras.embeddings import frozen, tuning
from birdkeras.errors import PredictError
from birdkeras.export.runtime import Runner, onnx_session

CARD = "route.json"  # what `birdkeras route` writes in a route folder


class RouteRunner:
    """A route folder as a runner: windows of one file -> probabilities over its classes.

    Args:
        folder: a `birdkeras route` folder.
        runtime: "onnx" runs the heads with ONNX Runtime; anything else with Keras.
        icfg: the `InferConfig` whose route switches apply (default: defaults).
        threads: ONNX Runtime's intra-op threads (0: its default).
    """

    def __init__(self, folder, runtime: str = "onnx", icfg=None, threads: int = 0):
        self.path = Path(folder)
        card_path = self.path / CARD
        if not card_path.is_file():
            raise PredictError(f"{card_path} not found: {folder} is not a birdkeras route")
        self.card = card = json.loads(card_path.read_text())
        self.icfg = icfg or config_lib.InferConfig()
        self.runtime = runtime
        self.precision_used = "f32"  # the embedder and heads run float32 (as Runner reports)
        embedder = self.icfg.embedder or card["embedder"]
        if not frozen.exists(embedder):
            raise PredictError(f"the route's embedding model {embedder} is not here: set "
                               "infer.embedder to its folder on this machine")
        self.embedder = frozen.load(embedder, card["window_samples"] / card["sample_rate_hz"],
                                    runtime)
        self.classes, self.activation = card["classes"], "sigmoid"
        self.sample_rate_hz = card["sample_rate_hz"]
        self.window_s = card["window_samples"] / card["sample_rate_hz"]
        if self.icfg.route_head:
            if self.icfg.route_head not in card["heads"]:
                raise PredictError(f"infer.route_head={self.icfg.route_head}: {folder} has "
                                   f"{card['heads']}")
            card["head"] = self.icfg.route_head
        self.weights = (card["head_weights"] if card["head"] == "blend"
                        else {card["head"]: 1.0})
        self.heads = {name: _head(self.path, name, runtime, threads)
                      for name, weight in self.weights.items() if weight > 0}
        self.mapping = None
        if card["mapping"]:
            m = card["mapping"]
            self.mapping = {"index": np.asarray(m["index"]),
                            "proxies": {int(k): v for k, v in m["proxies"].items()}}
        self.prior_weights = tuning.prior_weights(card["taxa"], card["prior_weight"],
                                                  card.get("prior_weight_by_taxon"))
        self.cnn, self.cnn_weight = None, card.get("cnn_weight", 0.0)
        if self.icfg.cnn_fusion and self.cnn_weight > 0:
            self.cnn = Runner(self.icfg.route_cnn or card["cnn"], "tf")

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * self.sample_rate_hz))

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        return self.score_file(windows, "")

    def score_file(self, windows: np.ndarray, name: str) -> np.ndarray:
        """Probabilities (windows, classes) for the windows of one file named `name`."""
        card, icfg = self.card, self.icfg
        emb, logits = self.embedder(np.asarray(windows, np.float32))
        mapped = (frozen.mapped_logits(logits, self.mapping)
                  if self.mapping is not None and logits is not None else None)
        site, hour = tuning.file_context(name)
        features = emb
        if card["route"].get("probe_temporal") and set(self.heads) - {"sequence"}:
            features = tuning.temporal_features(emb, np.zeros(len(emb)), np.arange(len(emb)))
        out = tuning.blend_heads({h: self._sequence(emb, mapped, site, hour) if h == "sequence"
                                  else head({"embedding": features})
                                  for h, head in self.heads.items()}, self.weights)
        if icfg.taxon_temperature:
            out = postprocess.taxon_temperature(out, card["taxa"], card["temperatures"])
        probs = tuning.sigmoid(out).astype(np.float32)
        if icfg.site_prior:
            probs = postprocess.prior_fusion(probs, tuning.prior_of(card["prior"], site, hour),
                                             self.prior_weights,
                                             card.get("prior_space", "probability"))
        if self.cnn is not None:
            probs = self.cnn_weight * self._cnn(windows) + (1 - self.cnn_weight) * probs
        if icfg.route_cross_window and card.get("cross_window"):
            probs = tuning.cross_window(probs, card["cross_window"],
                                        card.get("cross_window_by_taxon"), card["taxa"])
        if icfg.class_thresholds:
            probs = postprocess.thresholds(probs, np.asarray(card["thresholds"]),
                                           icfg.threshold_mode, icfg.threshold_power)
        return probs.astype(np.float32)

    def _sequence(self, emb, mapped, site: str, hour: int) -> np.ndarray:
        """The sequence head's logits for a file's windows; with `infer.route_shift_tta`,
        the mean over the file's sequence rotated by 0 and each shift (rotated back)."""
        shifts = [0, *(s for s in self.icfg.route_shift_tta if s % max(len(emb), 1))]
        total = 0.0
        for shift in shifts:
            rolled = None if mapped is None else np.roll(mapped, shift, axis=0)
            total = total + np.roll(self._sequence_once(np.roll(emb, shift, axis=0), rolled,
                                                        site, hour), -shift, axis=0)
        return total / len(shifts)

    def _sequence_once(self, emb, mapped, site: str, hour: int) -> np.ndarray:
        seq_len, n = self.card["seq_len"], len(emb)
        pad = np.concatenate([np.arange(n), np.repeat(n - 1, (-n) % seq_len)])
        runs = pad.reshape(-1, seq_len)
        known = self.card["sites"]
        inputs = {"embedding": emb[runs],
                  "site": np.full(len(runs), known.index(site) if site in known else len(known),
                                  np.int32),
                  "hour": np.full(len(runs), 24 if hour < 0 else hour, np.int32)}
        if self.card["route"]["fusion"] and mapped is not None:
            inputs["mapped_logits"] = mapped[runs]
        logits = self.heads["sequence"](inputs).reshape(-1, len(self.classes))
        return logits[:n]

    def _cnn(self, windows) -> np.ndarray:
        probs = self.cnn(windows)
        out = np.zeros((len(windows), len(self.classes)), np.float32)
        for k, c in enumerate(self.classes):
            if c in self.cnn.classes:
                out[:, k] = probs[:, self.cnn.classes.index(c)]
        return out


def _head(folder: Path, name: str, runtime: str, threads: int):
    """The head as a function {input name: array} -> logits."""
    if runtime == "onnx":
        session = onnx_session(folder / f"{name}.onnx", threads)
        names = [i.name for i in session.get_inputs()]
        return lambda feeds: session.run(None, {k: feeds[k] for k in names if k in feeds})[0]
    import keras  # noqa: PLC0415 - the Keras heads only when not on ONNX Runtime

    model = keras.models.load_model(folder / f"{name}.keras", compile=False)
    order = [t.name for t in model.inputs]
    return lambda feeds: np.asarray(model([feeds[k] for k in order] if len(order) > 1
                                          else feeds[order[0]], training=False))
