"""The benchmark world's soundscapes: sites, their backgrounds, who calls where and when.

With `SynthSpec.ecology` on, each current-year soundscape is a recorder at one of
`spec.sites` sites at one hour. A site has its own background (wind, rain and an insect
drone in its own proportions and drone pitch) and its own species: each species lives
at about half the sites (at least one in each half of them, so that a split by site
keeps every class on both sides), calling at a site-specific rate scaled by its taxon's
hours (birds at dawn and dusk, frogs and insects at night, mammals at any hour).
Textures (amphibians, insects) call in choruses of 8-30 s that span windows; birds and
mammals in bouts of 1.5-5 s. Every bout has its own level, `call_snr_db`: the calls'
peak over the background's RMS (whole band), so the low end is faint, at or under it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from birdkeras.synth import voices


@dataclasses.dataclass(frozen=True)
class Site:
    """A recorder's place: the shares of its background and the drone's pitch."""

    name: str  # S01, S02, ...
    wind: float
    rain: float
    drone: float
    drone_hz: float


def make_sites(n: int, rng: np.random.Generator) -> list[Site]:
    """`n` sites, each background a different mix of wind, rain and insect drone."""
    sites = []
    for i in range(n):
        mix = rng.dirichlet([1.0, 1.0, 1.0])
        sites.append(Site(name=f"S{i + 1:02d}", wind=float(mix[0]), rain=float(mix[1]),
                          drone=float(mix[2]), drone_hz=float(rng.uniform(2500, 6500))))
    return sites


def occupancy(species: list, n_sites: int, rng: np.random.Generator) -> np.ndarray:
    """Calling rate of each species (rows) at each site (columns), 0 where it is absent.

    Each species is present at each site with probability 1/2, and at one site at least
    in each half of the site list.
    """
    rates = np.zeros((len(species), n_sites))
    half = n_sites // 2
    for i in range(len(species)):
        present = rng.random(n_sites) < 0.5
        present[int(rng.integers(0, half))] = True
        present[int(rng.integers(half, n_sites))] = True
        rates[i, present] = rng.uniform(0.25, 0.8, int(present.sum()))
    return rates


def activity(sp: voices.Species, hour: int) -> float:
    """How much a taxon calls at an hour of the day (0-1)."""
    if sp.kind == voices.TEXTURE_KIND:
        return 1.0 if hour >= 19 or hour < 5 else 0.25
    if sp.class_name == "Mammalia":
        return 0.5
    if 5 <= hour < 9:
        return 1.0  # dawn chorus
    if 17 <= hour < 19:
        return 0.7
    return 0.35 if 9 <= hour < 17 else 0.08


def background(site: Site, n: int, sample_rate_hz: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS background of `site`: wind (low-passed noise, slow gusts), rain
    (high-passed noise with droplet clicks) and an insect drone (a narrow band around
    `drone_hz`, pulsing), mixed in the site's shares.

    Args:
        site: the site.
        n: samples.
        sample_rate_hz: the rate.
        rng: the generator.

    Returns:
        float32 audio (n,).
    """
    freqs = np.fft.rfftfreq(n, 1 / sample_rate_hz)
    t = np.arange(n) / sample_rate_hz

    def shaped(gain):
        spectrum = np.fft.rfft(rng.standard_normal(n)) * gain
        y = np.fft.irfft(spectrum, n)
        return y / (np.sqrt(np.mean(y**2)) + 1e-12)

    wind = shaped(1 / (1 + (freqs / 400.0) ** 2))
    wind *= 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.05, 0.2) * t + rng.uniform(0, 6.3))
    rain = shaped((freqs > 1500).astype(float))
    drops = np.zeros(n)
    count = int(n / sample_rate_hz * 40)  # droplets per second
    drops[rng.integers(0, n, count)] = rng.uniform(2, 8, count)
    rain += np.convolve(drops, np.hanning(32), mode="same")
    drone = shaped(np.exp(-0.5 * ((freqs - site.drone_hz) / (0.03 * site.drone_hz)) ** 2))
    drone *= 0.7 + 0.3 * np.sign(np.sin(2 * np.pi * rng.uniform(8, 30) * t))
    y = site.wind * wind + site.rain * rain + site.drone * drone
    return (y / (np.sqrt(np.mean(y**2)) + 1e-12)).astype(np.float32)


def render(rel: str, pool: list, duration_s: float, seed: int, site: Site, hour: int,
           rates: list, snr_db: tuple[float, float], sample_rate_hz: int):
    """One soundscape: `site`'s background and the species of `pool` present there at
    `hour`.

    Args:
        rel: the file's path under the tree's root (what its calls are listed under).
        pool: the species that may call.
        duration_s: length.
        seed: the soundscape's own seed.
        site: where it is recorded.
        hour: the hour of day (0-23).
        rates: each species' calling rate at `site` (0: absent).
        snr_db: the range of a bout's level (its peak over the background's RMS).
        sample_rate_hz: the rate.

    Returns:
        (float32 audio, its calls as (rel, code, start_s, end_s, snr_db)).
    """
    rng = np.random.default_rng(seed)
    n = int(duration_s * sample_rate_hz)
    bg_rms = 0.05
    track = background(site, n, sample_rate_hz, rng) * bg_rms
    calls = []
    for sp, rate in zip(pool, rates):
        if rate <= 0 or rng.random() >= rate * activity(sp, hour):
            continue
        if sp.kind == voices.TEXTURE_KIND:
            bouts = [float(rng.uniform(8, 30)) for _ in range(int(rng.integers(1, 3)))]
        else:
            bouts = [float(rng.uniform(1.5, 5)) for _ in range(1 + int(rng.poisson(1.5)))]
        pitch = float(rng.uniform(0.97, 1.03))
        for length in bouts:
            start = float(rng.uniform(0, max(duration_s - length, 0.1)))
            snr = float(rng.uniform(*snr_db))
            gain = bg_rms * 10 ** (snr / 20)  # a call's peak over the background's RMS
            placed = voices.place_calls(track, sp, sample_rate_hz, rng, gain, start,
                                        min(start + length, duration_s), pitch, 1.0)
            calls += [(rel, sp.code, round(a, 3), round(b, 3), round(snr, 1))
                      for a, b in placed]
    track *= 0.8 / (np.max(np.abs(track)) + 1e-9)
    return track, calls
