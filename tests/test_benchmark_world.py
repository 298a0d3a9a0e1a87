"""The benchmark world (synth profile "benchmark"): its ground truth is in its audio, its
twins are confusable, its sites and hours shape who calls; and the intervals that
every benchmark table reports cover what they claim to."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from birdkeras import metrics, synth, uncertainty
from birdkeras.datasets import soundscapes
from birdkeras.synth import voices

# The benchmark profile, shrunk: fewer species and clips, 16 shorter soundscapes.
SMALL_HARD = dataclasses.replace(
    synth.PROFILES["benchmark"], seed=3, num_birds=16, num_textures=6, num_mammals=1,
    target_species=12, clips_per_species=1, target_clips_per_species=2,
    median_duration_s=4.0, max_duration_s=12.0, long_fraction=0.0,
    labelled_soundscapes=12, unlabelled_soundscapes=4, soundscape_s=30.0,
    confusable_pairs=5, rare_species=3, sites=4)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world") / "data"
    synth.generate(root, SMALL_HARD)
    species = {s.code: s for s in voices.make_species(
        SMALL_HARD.num_birds, SMALL_HARD.num_textures,
        np.random.default_rng(SMALL_HARD.seed), SMALL_HARD.num_mammals,
        SMALL_HARD.confusable_pairs)}
    calls = pd.read_csv(root / "soundscape_calls.csv", dtype={"species": str})
    return root, species, calls[calls["path"].str.startswith("birdclef-2026/")]


def _band_energy(path, band):
    """Energy per STFT frame (1024, hop 512) in `band` (Hz, widened 5 % for the pitch
    jitter) and each frame's centre time."""
    y, rate = sf.read(path, dtype="float32")
    frames = np.lib.stride_tricks.sliding_window_view(y, 1024)[::512] * np.hanning(1024)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(1024, 1 / rate)
    inside = (freqs >= band[0] * 0.95) & (freqs <= band[1] * 1.05)
    return power[:, inside].mean(axis=1), (np.arange(len(power)) * 512 + 512) / rate


def _loudness_ratios(root, species, calls, shift_s=0.0):
    """Each call's band energy during its listed time over its file's median."""
    ratios = []
    for path, rows in calls.groupby("path"):
        for row in rows.itertuples():
            energy, t = _band_energy(root / path, voices.band_hz(species[row.species]))
            during = (t >= row.start_s + shift_s) & (t <= row.end_s + shift_s)
            ratios.append(energy[during].mean() / np.median(energy) if during.any() else 0.0)
    return np.array(ratios)


def test_the_listed_calls_are_in_the_rendered_audio(world):
    root, species, calls = world
    assert calls["snr_db"].between(*SMALL_HARD.call_snr_db).all()
    audible = calls[calls["snr_db"] >= 9]  # below: faint by design, maybe under the noise
    assert len(audible) > 200
    ratios = _loudness_ratios(root, species, audible)
    assert np.mean(ratios > 2) > 0.97, np.percentile(ratios, [1, 5, 50])
    # The same check, each call read 2.5 s off its listed time: most fall on nothing.
    assert np.mean(_loudness_ratios(root, species, audible, shift_s=2.5) > 2) < 0.8


def test_labelled_windows_are_the_calls_that_overlap_them(world):
    root, _, calls = world
    labels = soundscapes._read_2026(  # noqa: SLF001 - the reader training uses
        root / "birdclef-2026" / "train_soundscapes_labels.csv",
        root / "birdclef-2026" / "train_soundscapes")
    assert len(labels) == SMALL_HARD.labelled_soundscapes * 6
    for row in labels.itertuples():
        mine = calls[calls["path"].str.endswith(row.file.split("/")[-1])]
        overlapping = mine[(mine["start_s"] < row.end_s) & (mine["end_s"] > row.end_s - 5)]
        assert set(row.labels) == set(overlapping["species"]), row
    # Several species at once, often: windows with 2+ labels are common.
    assert np.mean([len(x) >= 2 for x in labels["labels"]]) > 0.3


def _spectral_profile(sp, rate=32000):
    """Mean power spectrum of 6 calls in 64 log-spaced bands (300 Hz-14 kHz), in dB
    relative to its peak, floored at -30 dB."""
    rng = np.random.default_rng(1)
    edges = np.geomspace(300, 14000, 65)
    bands = []
    for _ in range(6):
        track = np.zeros(3 * rate, np.float32)
        voices.place_calls(track, sp, rate, rng, 1.0, 0.0, 3.0, 1.0, 1.0)
        power, freqs = np.abs(np.fft.rfft(track)) ** 2, np.fft.rfftfreq(len(track), 1 / rate)
        bands.append([power[(freqs >= a) & (freqs < b)].mean()
                      for a, b in zip(edges[:-1], edges[1:])])
    mean = np.mean(bands, axis=0)
    return np.maximum(10 * np.log10(mean / mean.max() + 1e-12), -30.0)


def test_confusable_pairs_are_nearer_each_other_than_any_other_species(world):
    """Distance: RMS difference (dB) of the profiles. Each twin's distance to its pair is
    under 0.8 x its distance to the nearest other species of the current year."""
    root, species, _ = world
    pairs = json.loads((root / "synth_world.json").read_text())["confusable_pairs"]
    assert len(pairs) == SMALL_HARD.confusable_pairs
    assert {species[b].rhythm for _, b in pairs} == {1.0, voices.TWIN_RHYTHM}
    taxonomy = pd.read_csv(root / "birdclef-2026" / "taxonomy.csv", dtype=str)
    codes = [c for c in taxonomy["primary_label"] if c in species]
    profiles = np.array([_spectral_profile(species[c]) for c in codes])
    distance = np.sqrt(((profiles[:, None] - profiles[None]) ** 2).mean(axis=-1))
    for a, b in pairs:
        i, j = codes.index(a), codes.index(b)
        for k in (i, j):
            nearest_other = np.delete(distance[k], [i, j]).min()
            assert distance[i, j] < 0.8 * nearest_other, (a, b, distance[i, j], nearest_other)


def test_sites_and_hours_decide_who_calls(world):
    root, species, calls = world
    state = json.loads((root / "synth_world.json").read_text())
    rate = state["calling_rate"]
    # BC2026_Train_<id>_S<site>_<date>_<HHMMSS>.ogg
    parts = calls["path"].str.split("/").str[-1].str.split("_")
    calls = calls.assign(site=parts.str[3].str[1:].astype(int) - 1,
                         hour=parts.str[5].str[:2].astype(int))
    # Nobody calls where it does not live; every species lives in both halves of the sites.
    assert all(rate[c.species][c.site] > 0 for c in calls.itertuples())
    half = SMALL_HARD.sites // 2
    assert all(max(r[:half]) > 0 and max(r[half:]) > 0 for r in rate.values())
    # The backgrounds differ by site: each has its own mix.
    assert len({round(s["wind"], 3) for s in state["sites"]}) == SMALL_HARD.sites
    # Frogs and insects at night, birds by day.
    night = (calls["hour"] >= 19) | (calls["hour"] < 5)
    texture = calls["species"].map(lambda c: species[c].kind == voices.TEXTURE_KIND)
    files = calls.drop_duplicates("path")
    night_files = ((files["hour"] >= 19) | (files["hour"] < 5)).sum()
    day_files = len(files) - night_files
    if night_files and day_files:
        assert (texture & night).sum() / night_files > (texture & ~night).sum() / day_files


def test_rare_species_and_weak_labels(world):
    root, species, _ = world
    truth = pd.DataFrame(synth.read_truth(root)).fillna("")
    target = truth[truth["source"] == "birdclef-2026"]
    counts = target["primary_label"].value_counts()
    assert (counts == 1).sum() >= SMALL_HARD.rare_species
    # Some clips' secondary species are heard (truth) but unlisted (metadata).
    meta = pd.read_csv(root / "birdclef-2026" / "train.csv", dtype=str, keep_default_na=False)
    listed = dict(zip(meta["filename"], meta["secondary_labels"]))
    unlisted = [p for p, heard in zip(target["path"], target["secondary_labels"])
                if heard and listed["/".join(p.split("/")[-2:])] == "['']"]
    assert unlisted


def test_the_demo_world_has_none_of_it(synth_root):
    assert not (synth_root / "synth_world.json").exists()
    assert list(pd.read_csv(synth_root / "soundscape_calls.csv").columns) == [
        "path", "species", "start_s", "end_s"]


def test_intervals_cover_a_known_mean_at_their_nominal_rate():
    """Files: 40 per world, each with 5 windows drawn around the file's own level (a
    file effect); metric: the mean. The bootstrap over files covers the true mean in
    about 95 % of 300 worlds; Student's t over 3 seeds in about 95 % of 2,000."""
    rng = np.random.default_rng(0)

    def mean_metric(labels, scores):
        del labels
        return float(np.mean(scores))

    covered = []
    for _ in range(300):
        level = rng.normal(0.0, 1.0, 40)
        scores = (level[:, None] + rng.normal(0, 1.0, (40, 5))).reshape(-1, 1)
        files = np.repeat([f"f{i}" for i in range(40)], 5)
        interval = uncertainty.bootstrap(mean_metric, uncertainty.Scored(
            np.zeros_like(scores), scores, files), n_boot=300, seed=int(rng.integers(1e9)))
        covered.append(not interval.excludes(0.0))
    assert 0.90 <= np.mean(covered) <= 0.99
    seeds = [not uncertainty.seed_interval(rng.normal(0.8, 0.05, 3)).excludes(0.8)
             for _ in range(2000)]
    assert 0.93 <= np.mean(seeds) <= 0.97


def test_compare_pairs_the_settings_and_says_what_is_resolved():
    """Two settings on the same files: one the other plus noise, one clearly better."""
    rng = np.random.default_rng(1)
    runs = {"base": [], "same": [], "better": []}
    for _ in range(3):
        files = np.repeat([f"f{i}" for i in range(60)], 6)
        labels = (rng.random((360, 8)) < 0.3).astype(float)
        noise = rng.normal(0, 1.0, labels.shape)
        runs["base"].append(uncertainty.Scored(labels, labels + noise, files))
        runs["same"].append(uncertainty.Scored(labels, labels + noise
                                               + rng.normal(0, 0.05, labels.shape), files))
        runs["better"].append(uncertainty.Scored(labels, 2 * labels + noise, files))
    table = uncertainty.compare(runs, metrics.macro_roc_auc, "base", n_boot=200).set_index(
        "setting")
    assert not table.loc["same", "resolved"] and table.loc["same", "overlaps_baseline"]
    # Paired: what the files do to both cancels, so the difference is known far better
    # than either score.
    same = table.loc["same"]
    assert same["diff_high"] - same["diff_low"] < 0.25 * (same["files_high"] - same["files_low"])
    assert table.loc["better", "resolved"] and table.loc["better", "diff_low"] > 0
    assert not table.loc["better", "overlaps_baseline"]
    assert table.loc["base", "files_low"] < table.loc["base", "mean"] < table.loc["base",
                                                                                  "files_high"]
    text = uncertainty.markdown(table.reset_index(), "macro ROC-AUC")
    assert text.count("\n") == 4 and "| better |" in text


def test_a_biased_metric_keeps_its_estimate_inside_its_interval():
    """Resampling files duplicates windows, and duplicated positives tie: padded cmAP
    rises under the bootstrap. Its interval still holds its own estimate."""
    rng = np.random.default_rng(2)
    labels = (rng.random((480, 40)) < 0.02).astype(float)  # rare positives, weak scores
    scores = rng.random(labels.shape) + 0.1 * labels
    files = np.repeat([f"f{i}" for i in range(40)], 12)
    interval = uncertainty.bootstrap(metrics.padded_cmap,
                                     uncertainty.Scored(labels, scores, files), n_boot=300)
    below, above = interval.mean - interval.low, interval.high - interval.mean
    assert below > 0 and above > 0 and max(below / above, above / below) < 3
