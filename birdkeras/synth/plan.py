"""The plan of a synthetic tree: every clip and soundscape decided before any is rendered.

`SynthSpec` sizes the tree; `Planner` draws, from one seeded generator, each clip's
source, species, secondary species, duration, sample rate, channels, codec and
`xc_id` (reused across years as Kaggle's data does), which files are broken, and the
soundscapes to render.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from birdkeras.config import catalog
from birdkeras.synth import voices, world

OLDER_SOURCES = ("birdclef-2020", "birdclef-2021", "birdclef-2022", "birdclef-2023",
                 "birdclef-2024", "xeno-canto")
TARGET_SOURCE = "birdclef-2026"
SAMPLE_RATES = (22050, 32000, 44100, 48000)
SOUNDSCAPE_RATE_HZ = 32000
AUTHORS = ("Ana Ruiz", "Bram Piot", "Chen Wei", "Dana Okafor", "Eero Virtanen",
           "Fatima Zahra", "Gus Miller", "Hana Sato", "vir joshi", "Lars Lachmann")
LICENSE = "Creative Commons Attribution-NonCommercial-ShareAlike 4.0"


@dataclasses.dataclass(frozen=True)
class SynthSpec:
    """Size knobs. The defaults are the demo size (about half a minute on 2 cores)."""

    seed: int = 0
    num_birds: int = 16
    num_textures: int = 4  # amphibian- and insect-like taxa (2025, 2026)
    num_mammals: int = 1  # (2025, 2026)
    # Birds of the current year (BirdCLEF+ 2026), all also in older years. Its classes
    # are these, every texture and mammal, and one more bird that is only in its
    # taxonomy; its last texture has no clips (it is only heard in soundscapes).
    target_species: int = 10
    clips_per_species: int = 4  # per older source
    target_clips_per_species: int = 3  # the current year has few clips per species
    median_duration_s: float = 8.0
    min_duration_s: float = 2.0
    max_duration_s: float = 75.0
    long_fraction: float = 0.03  # share of clips of minutes rather than seconds
    # The current year's train_soundscapes/: labelled ones (train_soundscapes_labels.csv,
    # the 2026 form) and unlabelled ones (their calls only in soundscape_calls.csv).
    labelled_soundscapes: int = 6
    unlabelled_soundscapes: int = 2
    soundscape_s: float = 60.0
    broken_fraction: float = 0.03
    workers: int = 2
    # The benchmark world's knobs (`PROFILES["benchmark"]`); their defaults keep the
    # demo's world byte for byte. Twin species (voices 5 % apart in pitch, or 35 %
    # faster in rhythm: voices.make_species).
    confusable_pairs: int = 0
    # Current-year species with a single focal clip (one per older source), the long tail.
    rare_species: int = 0
    # Share of focal clips whose primary calls only in a part of the clip (weak labels);
    # half as many also lose their secondary species from the metadata (still audible).
    weak_label_fraction: float = 0.0
    # Soundscapes as an ecology (world.py): recorders at `sites` sites, each with its
    # own background (wind, rain, insect drone) and species, calling by hour of day;
    # textures in long choruses, birds and mammals in short bouts, at call levels from
    # `call_snr_db[0]` (faint) to `call_snr_db[1]` dB over the background. Off: the
    # demo's soundscapes (0-2 species per window over quiet pink noise).
    ecology: bool = False
    sites: int = 4
    call_snr_db: tuple[float, float] = (0.0, 24.0)

    def __post_init__(self):
        if self.target_species >= self.num_birds:
            raise ValueError(
                f"target_species={self.target_species} must be < num_birds={self.num_birds}"
            )
        if self.num_textures < 1:
            raise ValueError(f"num_textures={self.num_textures} must be >= 1")
        if not 0 < self.min_duration_s <= self.median_duration_s <= self.max_duration_s:
            raise ValueError(
                "durations must satisfy 0 < min_duration_s <= median_duration_s <= "
                f"max_duration_s; got {self.min_duration_s}, {self.median_duration_s}, "
                f"{self.max_duration_s}"
            )
        if self.soundscape_s < 5 or self.soundscape_s % 5:
            raise ValueError(f"soundscape_s={self.soundscape_s} must be a multiple of 5 s")
        if self.rare_species > self.target_species or self.confusable_pairs < 0:
            raise ValueError(f"rare_species={self.rare_species} must be <= target_species="
                             f"{self.target_species}; confusable_pairs must be >= 0")
        if not 0 <= self.weak_label_fraction <= 1 or self.sites < 2:
            raise ValueError(f"weak_label_fraction={self.weak_label_fraction} must be in "
                             f"[0, 1] and sites={self.sites} >= 2")


# The pipeline benchmarks' size (TFRecord build, input pipeline): a realistic length
# mix (median ~20 s, some of minutes), no broken files.
BENCHMARK = SynthSpec(
    seed=1, num_birds=8, num_textures=2, target_species=4, clips_per_species=10,
    median_duration_s=20.0, max_duration_s=240.0, long_fraction=0.06,
    labelled_soundscapes=0, unlabelled_soundscapes=0, broken_fraction=0.0)


# The world that tells training methods apart (benchmarks/soundscape_training.py;
# `birdkeras synth --profile benchmark`): 61 current-year classes (44 birds, 14
# amphibian/insect textures, 2 mammals, one taxonomy-only bird), 9 confusable pairs,
# 12 rare birds with one clip per source, weak labels on 40 % of the focal clips, and 144
# current-year soundscapes at 8 sites, two thirds labelled. Calibrated on seed 0: with
# 48 labelled files and calls at 0-24 dB, clips-only fine-tuning scored 0.678 macro
# ROC-AUC on the held-out sites, the intervals over 24 held-out files were +-0.035.
HARD = SynthSpec(
    seed=0, num_birds=52, num_textures=14, num_mammals=2, target_species=44,
    clips_per_species=3, target_clips_per_species=4, median_duration_s=10.0,
    max_duration_s=90.0, long_fraction=0.02, labelled_soundscapes=96,
    unlabelled_soundscapes=48, broken_fraction=0.0, confusable_pairs=9, rare_species=12,
    weak_label_fraction=0.4, ecology=True, sites=8, call_snr_db=(2.0, 26.0))

PROFILES = {"demo": SynthSpec(), "benchmark": HARD}


@dataclasses.dataclass
class Clip:
    """One planned focal recording: where it goes, its species, and how it is made."""

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
    # Weak labels: the primary calls only within this part of the clip (fractions of
    # its length); the secondaries are heard but missing from the metadata.
    primary_span: tuple[float, float] | None = None
    unlisted_secondaries: bool = False

    @property
    def listed_secondaries(self) -> list:
        """The secondary species the metadata names."""
        return [] if self.unlisted_secondaries else self.secondaries


class Planner:
    """Decides every clip (label, duration, rate, codec, xc_id) before any is rendered.

    Args:
        spec: the tree's size knobs.
        rng: the one seeded generator.
    """

    def __init__(self, spec: SynthSpec, rng: np.random.Generator):
        self.spec, self.rng = spec, rng
        self.clips: list[Clip] = []
        self.soundscapes: list[dict] = []
        self._next_xc = 100_000
        self._by_species: dict[str, list[Clip]] = {}
        self.sites: list[world.Site] = []  # with spec.ecology
        self.occupancy = np.zeros((0, 0))

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
        # A source's first clip is new and has a secondary species, so that every
        # source shows that quirk of the metadata at least once.
        first = not any(c.source == source for c in self.clips)
        if source != TARGET_SOURCE and reuse and not first and rng.random() < 0.2:
            # The same Xeno-Canto recording again, as it recurs across Kaggle years.
            old = reuse[int(rng.integers(len(reuse)))]
            xc_id, author, duration, secondaries, seed = (
                old.xc_id, old.author, old.duration_s, old.secondaries, old.seed)
        else:
            collection = "XC"
            if source in ("birdclef-2025", TARGET_SOURCE):
                collection = str(rng.choice(["XC", "iNat", "CSA"], p=[0.5, 0.3, 0.2]))
            xc_id = None
            if collection == "XC":
                self._next_xc += int(rng.integers(1, 5000))
                xc_id = self._next_xc
            author = str(rng.choice(AUTHORS))
            duration = self._duration()
            others = [o for o in pool if o.code != sp.code]
            n_sec = min(max(int(rng.choice([0, 0, 1, 2])), int(first)), len(others))
            secondaries = [others[i] for i in rng.choice(len(others), n_sec, replace=False)]
            seed = int(rng.integers(2**31))
        suffix = self._suffix(source)
        stem = f"XC{xc_id}" if xc_id else f"{'iNat' if rng.random() < 0.6 else 'CSA'}{seed % 10**6}"
        # On disk every source keeps a folder per label; 2022+ name it in `filename`.
        name = f"{stem}{suffix}"
        if catalog.SOURCES[source].audio_paths == "in_filename":
            name = f"{sp.code}/{name}"
        rel = catalog.audio_path(source, sp.code, name)
        if any(c.path == rel for c in self.clips):
            return  # the same recording twice in one year: skip, as Kaggle would
        clip = Clip(
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
        if self.spec.weak_label_fraction > 0:
            draw = rng.random()
            if draw < self.spec.weak_label_fraction:
                start = float(rng.uniform(0, 0.6))
                clip.primary_span = (round(start, 3),
                                     round(start + float(rng.uniform(0.2, 0.4)), 3))
            clip.unlisted_secondaries = bool(
                secondaries and draw < self.spec.weak_label_fraction / 2)
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

    def soundscape_jobs(self, out: Path, target_pool: list, textures: list) -> list:
        """Render jobs for every soundscape: the current year's (2026-style names, labelled
        and unlabelled), one labelled 2021 soundscape (2021-style name), one of 2025."""
        spec = self.spec
        specs = ([(TARGET_SOURCE, target_pool, True)] * spec.labelled_soundscapes
                 + [(TARGET_SOURCE, target_pool, False)] * spec.unlabelled_soundscapes
                 + [("birdclef-2021", target_pool, True), ("birdclef-2025", textures, False)])
        if spec.ecology:
            self.sites = world.make_sites(spec.sites, self.rng)
            self.occupancy = world.occupancy(target_pool, spec.sites, self.rng)
        jobs = []
        for k, (source, pool, labelled) in enumerate(specs):
            hour = None
            if source == TARGET_SOURCE:
                # BC2026_Train_<id>_S<site>_<YYYYMMDD>_<HHMMSS>: site, date and hour.
                hour = int(self.rng.integers(0, 24))
                name = (f"BC2026_Train_{k + 1:04d}_S{k % spec.sites + 1:02d}_"
                        f"202503{k % 28 + 1:02d}_"
                        f"{hour:02d}{int(self.rng.choice([0, 30])):02d}00.ogg")
            else:
                name = f"{10_000 + k * 37}_{('COR', 'SSW', 'SNE')[k % 3]}_2019{k % 12 + 1:02d}15.ogg"
            rel = f"{catalog.SOURCES[source].folder}/train_soundscapes/{name}"
            self.soundscapes.append({"source": source, "path": rel, "labelled": labelled})
            seed = int(self.rng.integers(2**31))
            if spec.ecology and source == TARGET_SOURCE:
                site = k % spec.sites
                jobs.append((str(out / rel), ("world", rel, pool, spec.soundscape_s, seed,
                                              self.sites[site], hour,
                                              list(self.occupancy[:, site]), spec.call_snr_db)))
            else:
                jobs.append((str(out / rel), ("soundscape", rel, pool, spec.soundscape_s,
                                              seed)))
        return jobs
