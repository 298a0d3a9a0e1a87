"""Synthetic species and their vocalisations.

Each species has one call type (FM sweep, trill, harmonic stack, buzz; a pulse train
for amphibian/insect-like "texture" taxa; low harmonic grunts for mammals) with its own
pitch and timing. Recordings
jitter pitch, tempo and level per recording, and mix calls into pink noise at a random
SNR, so a classifier has to learn the call, not the file.
"""

from __future__ import annotations

import dataclasses

import numpy as np

BIRD_KINDS = ("sweep", "trill", "stack", "buzz")
TEXTURE_KIND = "pulses"
MAMMAL_KIND = "grunt"

_SYLLABLES = ("ba", "ke", "ro", "ti", "mu", "sa", "lo", "ne", "ga", "pi", "du", "ve", "zo", "hy")
_GENERA = ("Synthia", "Fauxornis", "Pseudocantor", "Modulus", "Spectrovox", "Harmonica")
_EPITHETS = ("alba", "minor", "rufa", "sonora", "vocalis", "trillans", "fusca", "viridis")


@dataclasses.dataclass(frozen=True)
class Species:
    """One synthetic species: its labels and its call."""

    code: str  # eBird-style code, or a numeric iNat id for texture taxa (as in 2025)
    scientific_name: str
    common_name: str
    class_name: str  # Aves, Amphibia, Insecta or Mammalia
    kind: str
    f0_hz: float
    call_s: float
    gap_s: float
    # Notes or pulses per second relative to the call type's own (trills, pulse trains),
    # and the gaps' scale: a "rhythm twin" differs from its species only here.
    rhythm: float = 1.0

    @property
    def label_2020(self) -> str:
        """BirdCLEF 2020's `primary_label` form: 'Scientific name_Common Name'."""
        return f"{self.scientific_name}_{self.common_name}"


def make_species(num_birds: int, num_textures: int, rng: np.random.Generator,
                 num_mammals: int = 0, confusable_pairs: int = 0) -> list[Species]:
    """Distinct species: pitches spread on a log grid, call types cycled.

    Birds, then textures, then mammals: the same seed gives the same birds and textures
    whatever the number of mammals.

    With `confusable_pairs`, each call type gets its own pitch grid (neighbours ~15 %
    apart) and that many species are made the twin of the one before them (birds first,
    then textures; `twin`): the counts stay as asked.

    Args:
        num_birds: bird species.
        num_textures: amphibian/insect-like species.
        rng: the generator.
        num_mammals: mammal species.
        confusable_pairs: pairs of species that differ only slightly.

    Returns:
        The species, birds first.
    """
    species, codes = [], set()
    bird_f0 = np.geomspace(1500, 7000, max(num_birds, 1))
    rng.shuffle(bird_f0)
    if confusable_pairs:
        bird_f0 = _grid_per_kind(num_birds, 1500, 7000)
    for i in range(num_birds):
        while True:
            code = "".join(rng.choice(_SYLLABLES, 3)) + str(int(rng.integers(1, 4)))
            if code not in codes:
                break
        codes.add(code)
        kind = BIRD_KINDS[i % len(BIRD_KINDS)]
        genus, epithet = _GENERA[i % len(_GENERA)], _EPITHETS[(i // 2) % len(_EPITHETS)]
        species.append(
            Species(
                code=code,
                scientific_name=f"{genus} {epithet}{i}",
                common_name=f"{code.capitalize()[:-1]} {kind.capitalize()}bird",
                class_name="Aves",
                kind=kind,
                f0_hz=float(bird_f0[i]),
                call_s=float(rng.uniform(0.25, 0.7)),
                gap_s=float(rng.uniform(0.3, 1.0)),
            )
        )
    texture_f0 = np.geomspace(900, 4500, max(num_textures, 1))
    for i in range(num_textures):
        is_frog = i % 2 == 0
        species.append(
            Species(
                code=str(int(rng.integers(10_000, 2_000_000))),
                scientific_name=f"{'Ranula' if is_frog else 'Cicadella'} texta{i}",
                common_name=f"{'Pulse Frog' if is_frog else 'Buzz Cricket'} {i}",
                class_name="Amphibia" if is_frog else "Insecta",
                kind=TEXTURE_KIND,
                f0_hz=float(texture_f0[i]),
                call_s=float(rng.uniform(1.0, 2.0)),
                gap_s=float(rng.uniform(0.3, 0.8)),
            )
        )
    mammal_f0 = np.geomspace(180, 450, max(num_mammals, 1))
    for i in range(num_mammals):
        species.append(
            Species(
                code=str(int(rng.integers(10_000, 2_000_000))),
                scientific_name=f"Mammalia synthia{i}",
                common_name=f"Grunting Mammal {i}",
                class_name="Mammalia",
                kind=MAMMAL_KIND,
                f0_hz=float(mammal_f0[i]),
                call_s=float(rng.uniform(0.4, 0.9)),
                gap_s=float(rng.uniform(0.4, 1.0)),
            )
        )
    if confusable_pairs:
        _make_twins(species, confusable_pairs)
    return species


def _grid_per_kind(num_birds: int, low_hz: float, high_hz: float) -> np.ndarray:
    """Bird i (kind i % 4) gets a pitch on its kind's own log grid, the kinds' grids
    interleaved, so that no two birds of one call type are closer than one grid step."""
    kinds = len(BIRD_KINDS)
    per_kind = -(-num_birds // kinds)
    f0 = np.empty(num_birds)
    for i in range(num_birds):
        position = (i // kinds + (i % kinds) / kinds) / max(per_kind, 1)
        f0[i] = low_hz * (high_hz / low_hz) ** position
    return f0


# A pitch twin calls 5 % higher; a rhythm twin repeats its notes/pulses 35 % faster
# with shorter gaps (and, for call types without a note rate, shorter calls).
TWIN_PITCH, TWIN_RHYTHM = 1.05, 1.35


def twin_pairs(species: list[Species]) -> list[tuple[Species, Species]]:
    """(species, its twin) for every confusable pair `make_species` made."""
    by_name = {s.scientific_name: s for s in species}
    return [(by_name[s.scientific_name.removesuffix(" gemina")], s) for s in species
            if s.scientific_name.endswith(" gemina")]


def _make_twins(species: list[Species], pairs: int) -> None:
    """Replaces species 2k+1 of birds (two thirds of the pairs) and of textures (the
    rest) by a twin of species 2k: its pitch 5 % higher, or its rhythm faster."""
    birds = [i for i, s in enumerate(species) if s.class_name == "Aves"]
    textures = [i for i, s in enumerate(species) if s.kind == TEXTURE_KIND]
    bird_pairs = min(pairs - pairs // 3, len(birds) // 2)
    texture_pairs = min(pairs - bird_pairs, len(textures) // 2)
    for group, n in ((birds, bird_pairs), (textures, texture_pairs)):
        for k in range(n):
            original = species[group[2 * k]]
            by_pitch = k % 2 == 0
            species[group[2 * k + 1]] = dataclasses.replace(
                original,
                code=species[group[2 * k + 1]].code,
                scientific_name=f"{original.scientific_name} gemina",
                common_name=f"{'High' if by_pitch else 'Quick'} {original.common_name}",
                f0_hz=original.f0_hz * (TWIN_PITCH if by_pitch else 1.0),
                rhythm=1.0 if by_pitch else TWIN_RHYTHM,
                gap_s=original.gap_s / (1.0 if by_pitch else TWIN_RHYTHM),
                call_s=original.call_s / (1.0 if by_pitch or original.kind in ("trill", TEXTURE_KIND)
                                          else TWIN_RHYTHM),
            )


def band_hz(sp: Species) -> tuple[float, float]:
    """The band holding most of a call's energy (before a recording's ±6 % pitch
    jitter): what a test or a human reads the ground truth against."""
    f0 = sp.f0_hz
    return {
        "sweep": (f0, 2.0 * f0),
        "trill": (0.75 * f0, 1.25 * f0),
        "stack": (0.4 * f0, 1.6 * f0),
        "buzz": (0.92 * f0, 1.08 * f0),
        MAMMAL_KIND: (0.85 * f0, 6.0 * f0),
        TEXTURE_KIND: (0.95 * f0, 1.05 * f0),
    }[sp.kind]


def call(sp: Species, sample_rate_hz: int, rng: np.random.Generator, pitch=1.0, tempo=1.0):
    """One call of `sp`, unit peak, as float32.

    Args:
        sp: the species.
        sample_rate_hz: the rate.
        rng: the generator.
        pitch: a pitch factor.
        tempo: a tempo factor.
    """
    dur = sp.call_s / tempo
    n = max(int(dur * sample_rate_hz), 16)
    t = np.arange(n) / sample_rate_hz
    f0 = sp.f0_hz * pitch
    if sp.kind == "sweep":
        # Up-sweep over an octave, exponential in frequency.
        f = f0 * 2 ** (t / dur)
        y = np.sin(2 * np.pi * np.cumsum(f) / sample_rate_hz)
    elif sp.kind == "trill":
        # Fast repeated down-slurred notes at ~18 notes/s.
        rate = 18.0 * tempo * sp.rhythm
        phase_in_note = (t * rate) % 1.0
        f = f0 * (1.25 - 0.5 * phase_in_note)
        y = np.sin(2 * np.pi * np.cumsum(f) / sample_rate_hz) * np.sin(np.pi * phase_in_note) ** 2
    elif sp.kind == "stack":
        base = f0 / 2.5 * (1 + 0.02 * np.sin(2 * np.pi * 6 * t))
        phase = 2 * np.pi * np.cumsum(base) / sample_rate_hz
        y = sum(np.sin(k * phase) / k for k in range(1, 5))
    elif sp.kind == "buzz":
        # Narrow-band noise at f0, amplitude-modulated at ~90 Hz.
        noise = rng.standard_normal(n)
        spectrum = np.fft.rfft(noise)
        freqs = np.fft.rfftfreq(n, 1 / sample_rate_hz)
        spectrum[np.abs(freqs - f0) > 0.08 * f0] = 0
        y = np.fft.irfft(spectrum, n) * (0.5 + 0.5 * np.sign(np.sin(2 * np.pi * 90 * t)))
    elif sp.kind == MAMMAL_KIND:
        # Low harmonic grunts, amplitude-modulated at ~7 Hz.
        phase = 2 * np.pi * np.cumsum(f0 * (1 - 0.15 * t / dur)) / sample_rate_hz
        y = sum(np.sin(k * phase) / k for k in range(1, 7))
        y = y * (0.6 + 0.4 * np.sin(2 * np.pi * 7 * tempo * sp.rhythm * t))
    else:  # pulses: a regular train of short tone bursts, as frogs and insects call.
        rate = 25.0 * tempo * sp.rhythm
        phase_in_pulse = (t * rate) % 1.0
        y = np.sin(2 * np.pi * f0 * t) * (phase_in_pulse < 0.3)
    y = y * np.hanning(n)
    peak = np.max(np.abs(y))
    return (y / peak if peak > 0 else y).astype(np.float32)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS 1/f noise, the usual stand-in for wind and distant chorus."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.arange(len(spectrum), dtype=np.float64)
    freqs[0] = 1.0
    y = np.fft.irfft(spectrum / np.sqrt(freqs), n)
    return (y / (np.sqrt(np.mean(y**2)) + 1e-12)).astype(np.float32)


def place_calls(
    track: np.ndarray,
    sp: Species,
    sample_rate_hz: int,
    rng: np.random.Generator,
    gain: float,
    start_s: float,
    end_s: float,
    pitch: float,
    tempo: float,
) -> list[tuple[float, float]]:
    """Adds calls of `sp` between start_s and end_s; returns their (start, end) times.

    Args:
        track: the audio to add to (in place).
        sp: the species.
        sample_rate_hz: the rate.
        rng: the generator.
        gain: the calls' level.
        start_s: first possible call start.
        end_s: last possible call end.
        pitch: a pitch factor.
        tempo: a tempo factor.

    Returns:
        The calls' (start, end) times.
    """
    placed = []
    t = start_s
    while True:
        y = call(sp, sample_rate_hz, rng, pitch, tempo)
        call_dur = len(y) / sample_rate_hz
        if t + call_dur > end_s:
            break
        i = int(t * sample_rate_hz)
        track[i : i + len(y)] += gain * y
        placed.append((t, t + call_dur))
        t += call_dur + sp.gap_s / tempo * float(rng.uniform(0.7, 1.6))
    return placed


def render_recording(
    primary: Species,
    secondaries: list[Species],
    duration_s: float,
    sample_rate_hz: int,
    rng: np.random.Generator,
    primary_span: tuple[float, float] | None = None,
) -> np.ndarray:
    """A focal recording: calls of `primary` throughout, quieter secondaries, noise.

    Args:
        primary: the focal species.
        secondaries: quieter background species.
        duration_s: length.
        sample_rate_hz: the rate.
        rng: the generator.
        primary_span: the part of the clip (fractions of its length) the primary calls
            in; None: from its start to its end.

    Returns:
        float32 audio.
    """
    n = int(round(duration_s * sample_rate_hz))
    pitch, tempo = float(rng.uniform(0.94, 1.06)), float(rng.uniform(0.85, 1.15))
    snr_db = float(rng.uniform(3, 20))
    noise_rms = 10 ** (-snr_db / 20) * 0.35
    track = pink_noise(n, rng) * noise_rms
    start_s, end_s = rng.uniform(0, 0.3), duration_s
    if primary_span is not None:
        # At least two seconds (or the clip), so that the part holds a call.
        start_s = min(primary_span[0] * duration_s, max(duration_s - 2.0, 0.0))
        end_s = min(max(primary_span[1] * duration_s, start_s + 2.0), duration_s)
    place_calls(track, primary, sample_rate_hz, rng, 0.5, start_s, end_s, pitch, tempo)
    for sp in secondaries:
        place_calls(track, sp, sample_rate_hz, rng, 0.12, rng.uniform(0, duration_s / 2),
                    duration_s, float(rng.uniform(0.95, 1.05)), 1.0)
    level = float(rng.uniform(0.3, 0.9))
    peak = np.max(np.abs(track)) + 1e-9
    return (track * level / peak).astype(np.float32)
