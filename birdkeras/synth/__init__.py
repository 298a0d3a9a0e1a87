"""Synthetic BirdCLEF: a tree shaped like the Kaggle downloads, made from a seed.

Real BirdCLEF data cannot be downloaded where birdkeras is tested, so `generate` writes
its own: every year's folder layout, metadata columns and quirks (2020-2025, the
current year BirdCLEF+ 2026, Xeno-Canto extended); distinct, learnable synthetic
species shared across years, birds and non-birds (amphibian, insect and mammal
stand-ins); labelled soundscapes in the 2021 and 2026 forms and unlabelled ones; and
the mess of real data (four sample rates, stereo, four codecs, short and long clips,
the same `xc_id` in several years, broken files, some listed in `corrupt_files.json`).

Beside the Kaggle folders it writes two ground-truth files that Kaggle does not have:
`synth_truth.csv` (every audio file: true label, rate, channels, frames, and how it is
broken, if it is) and `soundscape_calls.csv` (every call placed in a soundscape); the
benchmark world (`PROFILES["benchmark"]`, world.py) adds `synth_world.json` (its sites'
backgrounds, each species' calling rate per site, the confusable pairs).
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import numpy as np

from birdkeras.config import catalog
from birdkeras.synth import metadata, render, voices
from birdkeras.synth.metadata import read_truth
from birdkeras.synth.plan import (BENCHMARK, OLDER_SOURCES, PROFILES, SAMPLE_RATES,
                                  TARGET_SOURCE, Planner, SynthSpec)

__all__ = ["BENCHMARK", "PROFILES", "SAMPLE_RATES", "SynthSpec", "ensure", "generate",
           "read_truth"]


def ensure(out: str | Path, spec: SynthSpec) -> Path:
    """Generates `spec` under `out` unless a generated tree is already there."""
    if not (Path(out) / "synth_truth.csv").is_file():
        generate(out, spec)
    return Path(out)


def generate(out: str | Path, spec: SynthSpec = SynthSpec()) -> dict:
    """Writes the synthetic tree under `out`; returns a summary (counts per source)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    species = voices.make_species(spec.num_birds, spec.num_textures, rng, spec.num_mammals,
                                  spec.confusable_pairs)
    birds = [s for s in species if s.class_name == "Aves"]
    others = [s for s in species if s.class_name != "Aves"]
    plan = Planner(spec, rng)

    # The current year first, so that older years can reuse its xc_ids (leakage that
    # ingest must remove). Its classes: target birds, every non-bird taxon, and one
    # bird only in its taxonomy; its last texture is only heard in soundscapes.
    target = birds[: spec.target_species] + others
    target_classes = sorted(target + [birds[spec.target_species]], key=lambda s: s.code)
    # The long tail: the last `rare_species` target birds have one clip per source.
    rare = {sp.code for sp in birds[spec.target_species - spec.rare_species:
                                    spec.target_species]}
    for sp in target:
        if sp is others[spec.num_textures - 1]:
            continue  # soundscape-only
        for _ in range(1 if sp.code in rare else spec.target_clips_per_species):
            plan.add_clip(TARGET_SOURCE, sp, target)
    # Older years, each covering two thirds of the birds; 2025 has the non-bird taxa.
    for k, source in enumerate(OLDER_SOURCES):
        for i, sp in enumerate(birds):
            if (i + k) % 3 == 0:
                continue
            for _ in range(1 if sp.code in rare else spec.clips_per_species):
                plan.add_clip(source, sp, birds)
    for sp in others + birds[-4:]:
        for _ in range(spec.clips_per_species):
            plan.add_clip("birdclef-2025", sp, others)
    plan.mark_broken()

    jobs = [(str(out / c.path), c) for c in plan.clips]
    jobs += plan.soundscape_jobs(out, target, others)
    with concurrent.futures.ProcessPoolExecutor(max(spec.workers, 1)) as pool:
        results = list(pool.map(render.render_job, jobs, chunksize=4))
    frames = {path: f for path, f in results if isinstance(f, int)}
    calls = [c for _, r in results if isinstance(r, list) for c in r]

    metadata.write_metadata(out, plan, species, target_classes)
    metadata.write_truth(out, plan.clips, frames)
    metadata.write_soundscape_labels(out, plan, calls)
    if spec.ecology:
        metadata.write_world(out, plan, target)
    # Kaggle's save run sees an empty test folder; the hidden run fills it.
    (out / catalog.SOURCES[TARGET_SOURCE].folder / "test_soundscapes").mkdir(exist_ok=True)
    return {
        "out": str(out),
        "species": len(species),
        "clips": {s: sum(c.source == s for c in plan.clips) for s in catalog.SOURCES},
        "broken": sum(bool(c.broken) for c in plan.clips),
        "soundscapes": len(plan.soundscapes),
    }
