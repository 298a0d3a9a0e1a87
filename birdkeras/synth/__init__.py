"""Synthetic BirdCLEF: a tree shaped like the Kaggle downloads, made from a seed.

Real BirdCLEF data cannot be downloaded where birdkeras is tested, so `generate` writes
its own: every year's folder layout, metadata columns and quirks; distinct, learnable
synthetic species shared across years; labelled and unlabelled soundscapes; and the
mess of real data (four sample rates, stereo, four codecs, short and long clips, the
same `xc_id` in several years, broken files, some listed in `corrupt_files.json`).

Beside the Kaggle folders it writes two ground-truth files that Kaggle does not have:
`synth_truth.csv` (every audio file: true label, rate, channels, frames, and how it is
broken, if it is) and `soundscape_calls.csv` (every call placed in a soundscape).
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import json
from pathlib import Path

import numpy as np

from birdkeras import audio, layout
from birdkeras.synth import ogg, voices

OLDER_SOURCES = ("birdclef-2020", "birdclef-2021", "birdclef-2022", "birdclef-2023",
                 "xeno-canto")
TARGET_SOURCE = "birdclef-2024"
SAMPLE_RATES = (22050, 32000, 44100, 48000)
SOUNDSCAPE_RATE_HZ = 32000
_AUTHORS = ("Ana Ruiz", "Bram Piot", "Chen Wei", "Dana Okafor", "Eero Virtanen",
            "Fatima Zahra", "Gus Miller", "Hana Sato", "vir joshi", "Lars Lachmann")
_LICENSE = "Creative Commons Attribution-NonCommercial-ShareAlike 4.0"


@dataclasses.dataclass(frozen=True)
class SynthSpec:
    """Size knobs. The defaults are the demo size (about half a minute on 2 cores)."""

    seed: int = 0
    num_birds: int = 16
    num_textures: int = 4
    target_species: int = 10  # birds of the current year (2024), all also in older years
    clips_per_species: int = 4  # per older source
    target_clips_per_species: int = 3  # the current year has few clips per species
    median_duration_s: float = 8.0
    min_duration_s: float = 2.0
    max_duration_s: float = 75.0
    long_fraction: float = 0.03  # share of clips of minutes rather than seconds
    labelled_soundscapes: int = 6
    unlabelled_soundscapes: int = 2
    soundscape_s: float = 60.0
    broken_fraction: float = 0.03
    workers: int = 2

    def __post_init__(self):
        if self.target_species > self.num_birds:
            raise ValueError(
                f"target_species={self.target_species} must be <= num_birds={self.num_birds}"
            )
        if not 0 < self.min_duration_s <= self.median_duration_s <= self.max_duration_s:
            raise ValueError(
                "durations must satisfy 0 < min_duration_s <= median_duration_s <= "
                f"max_duration_s; got {self.min_duration_s}, {self.median_duration_s}, "
                f"{self.max_duration_s}"
            )
        if self.soundscape_s < 5 or self.soundscape_s % 5:
            raise ValueError(f"soundscape_s={self.soundscape_s} must be a multiple of 5 s")


# The benchmarks' size: three older sources, a realistic length mix (median ~20 s,
# some of minutes), no broken files.
BENCHMARK = SynthSpec(
    seed=1, num_birds=8, num_textures=2, target_species=4, clips_per_species=10,
    median_duration_s=20.0, max_duration_s=240.0, long_fraction=0.06,
    labelled_soundscapes=0, unlabelled_soundscapes=0, broken_fraction=0.0)


def ensure(out: str | Path, spec: SynthSpec) -> Path:
    """Generates `spec` under `out` unless a generated tree is already there."""
    if not (Path(out) / "synth_truth.csv").is_file():
        generate(out, spec)
    return Path(out)


@dataclasses.dataclass
class _Clip:
    source: str
    path: str  # relative to the data root
    primary: voices.Species
    secondaries: list
    xc_id: int | None
    author: str
    duration_s: float
    sample_rate_hz: int
    channels: int
    seed: int
    broken: str = ""  # "", "truncated", "empty" or "silent"
    meta: dict = dataclasses.field(default_factory=dict)


def generate(out: str | Path, spec: SynthSpec = SynthSpec()) -> dict:
    """Writes the synthetic tree under `out`; returns a summary (counts per source)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    species = voices.make_species(spec.num_birds, spec.num_textures, rng)
    birds = [s for s in species if s.class_name == "Aves"]
    textures = [s for s in species if s.class_name != "Aves"]
    plan = _Planner(spec, rng)

    # The current year first, so that older years can reuse its xc_ids (leakage that
    # ingest must remove), then older years, each covering two thirds of the birds.
    target = birds[: spec.target_species]
    for sp in target:
        for _ in range(spec.target_clips_per_species):
            plan.add_clip(TARGET_SOURCE, sp, birds)
    for k, source in enumerate(OLDER_SOURCES):
        for i, sp in enumerate(birds):
            if (i + k) % 3 == 0:
                continue
            for _ in range(spec.clips_per_species):
                plan.add_clip(source, sp, birds)
    for sp in textures + birds[-4:]:
        for _ in range(spec.clips_per_species):
            plan.add_clip("birdclef-2025", sp, textures)
    plan.mark_broken()

    jobs = [(str(out / c.path), c) for c in plan.clips]
    jobs += plan.soundscape_jobs(out, target, textures)
    with concurrent.futures.ProcessPoolExecutor(max(spec.workers, 1)) as pool:
        results = list(pool.map(_render_job, jobs, chunksize=4))
    frames = {path: f for path, f in results if isinstance(f, int)}
    calls = [c for _, r in results if isinstance(r, list) for c in r]

    _write_metadata(out, plan, species, birds, target, textures)
    _write_truth(out, plan.clips, frames)
    _write_soundscape_labels(out, plan, calls)
    return {
        "out": str(out),
        "species": len(species),
        "clips": {s: sum(c.source == s for c in plan.clips) for s in layout.SOURCE_DIRS},
        "broken": sum(bool(c.broken) for c in plan.clips),
        "soundscapes": len(plan.soundscapes),
    }


class _Planner:
    """Decides every clip (label, duration, rate, codec, xc_id) before any is rendered."""

    def __init__(self, spec: SynthSpec, rng: np.random.Generator):
        self.spec, self.rng = spec, rng
        self.clips: list[_Clip] = []
        self.soundscapes: list[dict] = []
        self._next_xc = 100_000
        self._by_species: dict[str, list[_Clip]] = {}

    def _duration(self) -> float:
        s = self.spec
        if self.rng.random() < s.long_fraction:
            return round(float(self.rng.uniform(min(60.0, s.max_duration_s), s.max_duration_s)), 2)
        d = s.median_duration_s * float(np.exp(self.rng.normal(0, 0.6)))
        return round(float(np.clip(d, s.min_duration_s, s.max_duration_s)), 2)

    def add_clip(self, source: str, sp: voices.Species, pool: list) -> None:
        rng = self.rng
        earlier = self._by_species.get(sp.code, [])
        reuse = [c for c in earlier if c.source != source and c.xc_id is not None]
        if source != TARGET_SOURCE and reuse and rng.random() < 0.2:
            # The same Xeno-Canto recording again, as it recurs across Kaggle years.
            old = reuse[int(rng.integers(len(reuse)))]
            xc_id, author, duration, secondaries, seed = (
                old.xc_id, old.author, old.duration_s, old.secondaries, old.seed)
        else:
            collection = "XC"
            if source == "birdclef-2025":
                collection = str(rng.choice(["XC", "iNat", "CSA"], p=[0.5, 0.3, 0.2]))
            xc_id = None
            if collection == "XC":
                self._next_xc += int(rng.integers(1, 5000))
                xc_id = self._next_xc
            author = str(rng.choice(_AUTHORS))
            duration = self._duration()
            others = [o for o in pool if o.code != sp.code]
            n_sec = min(int(rng.choice([0, 0, 1, 2])), len(others))
            secondaries = [others[i] for i in rng.choice(len(others), n_sec, replace=False)]
            seed = int(rng.integers(2**31))
        suffix = self._suffix(source)
        stem = f"XC{xc_id}" if xc_id else f"{'iNat' if rng.random() < 0.6 else 'CSA'}{seed % 10**6}"
        folder = layout.SOURCE_DIRS[source]
        if source == "xeno-canto":
            rel = f"{folder}/{layout.xc_folder(sp.code)}/{sp.code}/{stem}{suffix}"
        else:
            rel = f"{folder}/{layout.AUDIO_DIRS[source]}/{sp.code}/{stem}{suffix}"
        if any(c.path == rel for c in self.clips):
            return  # the same recording twice in one year: skip, as Kaggle would
        clip = _Clip(
            source=source, path=rel, primary=sp, secondaries=list(secondaries), xc_id=xc_id,
            author=author, duration_s=duration,
            sample_rate_hz=int(rng.choice(SAMPLE_RATES)),
            channels=2 if rng.random() < 0.2 else 1, seed=seed,
        )
        clip.meta = {
            "rating": float(rng.integers(0, 11)) / 2 if xc_id else 0.0,
            "latitude": "" if rng.random() < 0.1 else round(float(rng.uniform(-40, 60)), 4),
            "longitude": "" if rng.random() < 0.1 else round(float(rng.uniform(-120, 150)), 4),
            "type": str(rng.choice(["['call']", "['song']", "['call', 'song']", "['']"])),
            "date": f"20{int(rng.integers(10, 24)):02d}-0{int(rng.integers(1, 10))}-1{int(rng.integers(0, 10))}",
            "time": f"{int(rng.integers(4, 20)):02d}:{int(rng.choice([0, 30])):02d}",
        }
        if not any(c.source == source for c in self.clips):
            # Every source shows the missing-coordinates quirk at least once.
            clip.meta["latitude"] = clip.meta["longitude"] = ""
        self.clips.append(clip)
        self._by_species.setdefault(sp.code, []).append(clip)

    def _suffix(self, source: str) -> str:
        main = ".mp3" if source in ("birdclef-2020", "xeno-canto") else ".ogg"
        return str(self.rng.choice([main, ".flac", ".wav"], p=[0.84, 0.08, 0.08]))

    def mark_broken(self) -> None:
        """Breaks a few files in three ways; at least one of each kind."""
        if self.spec.broken_fraction <= 0:
            return
        n = max(3, int(round(self.spec.broken_fraction * len(self.clips))))
        picks = self.rng.choice(len(self.clips), n, replace=False)
        for j, i in enumerate(picks):
            self.clips[i].broken = ("truncated", "empty", "silent")[j % 3]

    def soundscape_jobs(self, out: Path, target: list, textures: list) -> list:
        jobs = []
        specs = (
            [("birdclef-2024", "train_soundscapes", target, True)] * self.spec.labelled_soundscapes
            + [("birdclef-2021", "train_soundscapes", target, True)]
            + [("birdclef-2024", "unlabeled_soundscapes", target, False)]
            * self.spec.unlabelled_soundscapes
            + [("birdclef-2025", "train_soundscapes", textures, False)]
        )
        for k, (source, folder, pool, labelled) in enumerate(specs):
            audio_id = 10_000 + k * 37
            site = ("COR", "SSW", "SNE")[k % 3]
            name = f"{audio_id}_{site}_2019{k % 12 + 1:02d}15.ogg"
            rel = f"{layout.SOURCE_DIRS[source]}/{folder}/{name}"
            info = {"source": source, "path": rel, "audio_id": audio_id, "site": site,
                    "labelled": labelled}
            self.soundscapes.append(info)
            jobs.append((str(out / rel), ("soundscape", rel, pool, self.spec.soundscape_s,
                                          int(self.rng.integers(2**31)))))
        return jobs


def _render_job(job):
    path, what = job
    if isinstance(what, tuple):
        return path, _render_soundscape(path, *what[1:])
    return path, _render_clip(path, what)


def _render_clip(path: str, clip: _Clip) -> int:
    rng = np.random.default_rng(clip.seed)
    y = voices.render_recording(clip.primary, clip.secondaries, clip.duration_s,
                                clip.sample_rate_hz, rng)
    if clip.broken == "silent":
        y = np.zeros_like(y)
    if clip.channels == 2:
        y = np.stack([y, 0.8 * np.roll(y, 7)], axis=1)
    _write(path, y, clip.sample_rate_hz, clip.seed)
    if clip.broken == "empty":
        Path(path).write_bytes(b"")
    elif clip.broken == "truncated":
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: max(len(data) * 35 // 100, 64)])
    return len(y)


def _render_soundscape(path: str, rel: str, pool: list, duration_s: float, seed: int) -> list:
    """Twelve (or duration/5) windows, each with 0-2 species calling inside it."""
    rng = np.random.default_rng(seed)
    sr = SOUNDSCAPE_RATE_HZ
    track = voices.pink_noise(int(duration_s * sr), rng) * 0.03
    calls = []
    for w in range(int(duration_s // 5)):
        k = int(rng.choice([0, 1, 1, 2]))
        for i in rng.choice(len(pool), min(k, len(pool)), replace=False):
            sp = pool[int(i)]
            start = w * 5 + float(rng.uniform(0.1, 2.0))
            end = min(start + float(rng.uniform(1.5, 3.0)), w * 5 + 4.9)
            placed = voices.place_calls(track, sp, sr, rng, float(rng.uniform(0.3, 0.6)),
                                        start, end, float(rng.uniform(0.96, 1.04)), 1.0)
            calls += [(rel, sp.code, round(a, 3), round(b, 3)) for a, b in placed]
    track *= 0.8 / (np.max(np.abs(track)) + 1e-9)
    _write(path, track, sr, seed)
    return calls


def _write(path: str, y: np.ndarray, sample_rate_hz: int, seed: int) -> None:
    audio.write(path, y, sample_rate_hz)
    if path.endswith(".ogg"):
        ogg.set_serial(path, seed)


# ----------------------------------------------------------------------------------
# Metadata.


def _label(sp: voices.Species) -> str:
    return sp.code


def _write_metadata(out: Path, plan: _Planner, species, birds, target, textures) -> None:
    by_source: dict[str, list[_Clip]] = {}
    for clip in plan.clips:
        by_source.setdefault(clip.source, []).append(clip)
    for source, clips in by_source.items():
        folder = out / layout.SOURCE_DIRS[source]
        if source in ("birdclef-2020", "xeno-canto"):
            rows, columns = [_row_2020(c) for c in clips], layout.COLUMNS_2020
        elif source == "birdclef-2021":
            rows, columns = [_row_2021(c) for c in clips], layout.COLUMNS_2021
        elif source == "birdclef-2022":
            rows, columns = [_row_2022(c) for c in clips], layout.COLUMNS_2022
        elif source == "birdclef-2025":
            rows, columns = [_row_2025(c) for c in clips], layout.COLUMNS_2025
        else:
            rows, columns = [_row_2022(c) for c in clips], layout.COLUMNS_2023
        layout.write_csv(folder / layout.METADATA_FILES[source], columns, rows)
        classes = sorted({c.primary.code for c in clips})
        if source in layout.TAXONOMY_FILES:
            _write_taxonomy(folder, source, species)
            _write_sample_submission(folder, source, classes)
    corrupt = [c.path for i, c in enumerate(c for c in plan.clips if c.broken) if i % 2 == 0]
    (out / "corrupt_files.json").write_text(json.dumps(corrupt, indent=1) + "\n")


def _xc_url(clip: _Clip) -> str:
    return f"https://www.xeno-canto.org/{clip.xc_id}" if clip.xc_id else ""


def _row_2020(c: _Clip) -> dict:
    lat = c.meta["latitude"]
    name = Path(c.path).name
    return {
        "rating": c.meta["rating"], "playback_used": "no", "ebird_code": c.primary.code,
        "channels": f"{c.channels} ({'stereo' if c.channels == 2 else 'mono'})",
        "date": c.meta["date"], "pitch": "Not specified", "duration": int(round(c.duration_s)),
        "filename": name, "speed": "Not specified", "species": c.primary.common_name,
        "number_of_notes": "Not specified", "title": f"XC{c.xc_id} {c.primary.common_name}",
        "secondary_labels": layout.py_list([s.label_2020 for s in c.secondaries]),
        "bird_seen": "yes", "sci_name": c.primary.scientific_name, "location": "Synthland",
        "latitude": "Not specified" if lat == "" else lat,
        "sampling_rate": f"{c.sample_rate_hz} (Hz)", "type": "call, song",
        "elevation": "100 m", "description": "", "bitrate_of_mp3": "128000 (bps)",
        "file_type": Path(name).suffix.lstrip("."), "volume": "Not specified",
        "background": "", "xc_id": c.xc_id, "url": _xc_url(c), "country": "Synthland",
        "author": c.author, "primary_label": c.primary.label_2020,
        "longitude": "Not specified" if c.meta["longitude"] == "" else c.meta["longitude"],
        "length": "Not specified", "time": c.meta["time"], "recordist": c.author,
        "license": _LICENSE,
    }


def _common(c: _Clip) -> dict:
    return {
        "primary_label": c.primary.code,
        "secondary_labels": layout.py_list([s.code for s in c.secondaries]),
        "type": c.meta["type"], "latitude": c.meta["latitude"],
        "longitude": c.meta["longitude"], "scientific_name": c.primary.scientific_name,
        "common_name": c.primary.common_name, "author": c.author, "license": _LICENSE,
        "rating": c.meta["rating"], "url": _xc_url(c), "time": c.meta["time"],
        "date": c.meta["date"],
    }


def _row_2021(c: _Clip) -> dict:
    return {**_common(c), "filename": Path(c.path).name}


def _row_2022(c: _Clip) -> dict:
    return {**_common(c), "filename": f"{c.primary.code}/{Path(c.path).name}"}


def _row_2025(c: _Clip) -> dict:
    row = _common(c)
    name = Path(c.path).name
    collection = "XC" if c.xc_id else ("iNat" if name.startswith("iNat") else "CSA")
    secondary = row["secondary_labels"] if c.secondaries else "['']"
    return {
        **row, "secondary_labels": secondary,
        "filename": f"{c.primary.code}/{name}", "collection": collection,
        "rating": c.meta["rating"] if c.xc_id else 0,
        "latitude": "None" if c.meta["latitude"] == "" else c.meta["latitude"],
        "longitude": "None" if c.meta["longitude"] == "" else c.meta["longitude"],
        "url": _xc_url(c) or f"https://static.inaturalist.org/sounds/{c.seed % 10**6}.wav",
        # A trailing space in a name, as the real 2025 metadata has.
        "scientific_name": c.primary.scientific_name + (" " if c.primary.kind == "pulses" else ""),
    }


def _write_taxonomy(folder: Path, source: str, species) -> None:
    if source == "birdclef-2025":
        rows = [{"primary_label": s.code, "inat_taxon_id": s.code if s.code.isdigit() else "",
                 "scientific_name": s.scientific_name, "common_name": s.common_name,
                 "class_name": s.class_name} for s in species]
        layout.write_csv(folder / "taxonomy.csv", layout.TAXONOMY_2025_COLUMNS, rows)
        return
    rows = [{"TAXON_ORDER": i + 1, "CATEGORY": "species", "SPECIES_CODE": s.code,
             "PRIMARY_COM_NAME": s.common_name, "SCI_NAME": s.scientific_name,
             "ORDER1": "Synthiformes", "FAMILY": "Synthidae (Synthbirds)",
             "SPECIES_GROUP": "Synthbirds", "REPORT_AS": ""}
            for i, s in enumerate(species) if s.class_name == "Aves"]
    layout.write_csv(folder / layout.TAXONOMY_FILES[source], layout.EBIRD_TAXONOMY_COLUMNS,
                     rows, bom=source not in ("birdclef-2020", "birdclef-2021"))


def _write_sample_submission(folder: Path, source: str, classes: list) -> None:
    if source == "birdclef-2020":
        rows = [{"site": "site_1", "row_id": f"site_1_41e6fe6504a34bf6846938ba78d13df1_{t}",
                 "birds": "nocall"} for t in (5, 10, 15)]
        layout.write_csv(folder / "sample_submission.csv", ("site", "row_id", "birds"), rows)
    elif source == "birdclef-2021":
        rows = [{"row_id": f"3575_COR_{t}", "birds": "nocall"} for t in (5, 10, 15)]
        layout.write_csv(folder / "sample_submission.csv", ("row_id", "birds"), rows)
    elif source == "birdclef-2022":
        rows = [{"row_id": f"soundscape_1000170626_{classes[0]}_{t}", "target": False}
                for t in (5, 10, 15)]
        layout.write_csv(folder / "sample_submission.csv", ("row_id", "target"), rows)
    else:
        rows = [{"row_id": f"soundscape_1000170626_{t}", **{c: 1 / len(classes) for c in classes}}
                for t in (5, 10, 15)]
        layout.write_csv(folder / "sample_submission.csv", ("row_id", *classes), rows)


def _write_truth(out: Path, clips: list, frames: dict) -> None:
    rows = [{
        "path": c.path, "source": c.source, "primary_label": c.primary.code,
        "secondary_labels": " ".join(s.code for s in c.secondaries),
        "xc_id": c.xc_id or "", "duration_s": c.duration_s,
        "sample_rate_hz": c.sample_rate_hz, "channels": c.channels,
        "frames": frames[str(out / c.path)], "broken": c.broken,
    } for c in clips]
    layout.write_csv(out / "synth_truth.csv", tuple(rows[0]), rows)


def _write_soundscape_labels(out: Path, plan: _Planner, calls: list) -> None:
    layout.write_csv(out / "soundscape_calls.csv", ("path", "species", "start_s", "end_s"),
                     [dict(zip(("path", "species", "start_s", "end_s"), c)) for c in calls])
    for source in ("birdclef-2021", "birdclef-2024"):
        rows = []
        for sc in plan.soundscapes:
            if sc["source"] != source or not sc["labelled"]:
                continue
            for w in range(int(plan.spec.soundscape_s // 5)):
                end = (w + 1) * 5
                birds = sorted({sp for p, sp, a, b in calls
                                if p == sc["path"] and a < end and b > end - 5})
                rows.append({"row_id": f"{sc['audio_id']}_{sc['site']}_{end}",
                             "site": sc["site"], "audio_id": sc["audio_id"], "seconds": end,
                             "birds": " ".join(birds) or "nocall"})
        layout.write_csv(out / layout.SOURCE_DIRS[source] / "train_soundscape_labels.csv",
                         layout.SOUNDSCAPE_LABEL_COLUMNS, rows)


def read_truth(root: str | Path) -> list[dict]:
    """The generator's ground truth, one dict per audio file."""
    with open(Path(root) / "synth_truth.csv", newline="") as f:
        return list(csv.DictReader(f))
