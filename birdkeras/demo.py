"""`make demo`: every stage that exists, end to end, on the synthetic demo tree.

Stages: synthetic data -> ingest (pretraining and fine-tuning manifests) -> TFRecords
-> verify. Later stages (pretrain, fine-tune, evaluate, submission) join here as they
land. The configs are the real ones in configs/, pointed at `workdir`.
"""

from __future__ import annotations

import time
from pathlib import Path

from birdkeras import config as config_lib
from birdkeras import manifest, shards, synth

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def run(workdir: str = "work/demo", seed: int = 0) -> int:
    workdir = Path(workdir)
    data = workdir / "data"
    timings, lines = {}, []
    start = time.perf_counter()
    if (data / "synth_truth.csv").is_file():
        lines.append(f"synthetic data: reusing {data}")
    else:
        summary = synth.generate(data, synth.SynthSpec(seed=seed))
        lines.append(f"synthetic data: {sum(summary['clips'].values())} clips, "
                     f"{summary['soundscapes']} soundscapes, {summary['species']} species "
                     f"-> {data}")
    timings["synth"] = time.perf_counter() - start

    for stage in ("pre", "ft"):
        cfg = config_lib.load_config(CONFIG_DIR / f"demo_{stage}.yaml", [
            f"data.root={data}", f"data.corrupt_files={data / 'corrupt_files.json'}",
            f"data.manifest_dir={workdir / stage / 'manifest'}",
            f"tfrecords.dir={workdir / stage / 'tfrecords'}", f"workdir={workdir / stage}",
        ])
        t0 = time.perf_counter()
        table, name2label, report = manifest.build(cfg)
        out = manifest.save(cfg.data.manifest_dir, table, name2label, report)
        config_lib.save_config(cfg, out / "config.yaml")
        card = shards.build(table, name2label, cfg, progress=False)
        checked = shards.verify(table, name2label, cfg)
        timings[stage] = time.perf_counter() - t0
        lines.append(
            f"{cfg.name}: {len(table)} recordings / {len(name2label)} classes from "
            f"{', '.join(cfg.data.sources)}; {card['records']} records in "
            f"{len(card['shards'])} shards ({card['durations_s']['total'] / 60:.1f} audio min), "
            f"{card['failures']} bad files skipped, verified {checked['records']}")
    print("\nbirdkeras demo summary")
    for line in lines:
        print("  " + line)
    print("  time: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    print("  not yet built: pretrain, fine-tune, evaluate, submission (issues 4-6)")
    return 0
