"""The metadata files of a synthetic tree: each year's CSVs, taxonomies, sample
submissions and labelled soundscapes, plus the generator's own ground truth
(`synth_truth.csv`, `soundscape_calls.csv`)."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

from birdkeras.config import catalog
from birdkeras.datasets.soundscapes import FORM_2021, FORM_2026
from birdkeras.synth import voices
from birdkeras.synth.plan import LICENSE, TARGET_SOURCE, Clip, Planner


def write_metadata(out: Path, plan: Planner, species, target_classes) -> None:
    """Each source's metadata CSV, taxonomy and sample submission; the corrupt list.

    The current year's taxonomy and sample submission list `target_classes`, clips or
    not (as BirdCLEF 2025/2026 list species that only soundscapes hold).

    Args:
        out: the tree's root.
        plan: the planned clips and soundscapes.
        species: every species.
        target_classes: the current year's classes.
    """
    by_source: dict[str, list[Clip]] = {}
    for clip in plan.clips:
        by_source.setdefault(clip.source, []).append(clip)
    for source, clips in by_source.items():
        folder = out / catalog.SOURCES[source].folder
        if source in ("birdclef-2020", "xeno-canto"):
            rows, columns = [_row_2020(c) for c in clips], catalog.COLUMNS_2020
        elif source == "birdclef-2021":
            rows, columns = [_row_2021(c) for c in clips], catalog.COLUMNS_2021
        elif source == "birdclef-2022":
            rows, columns = [_row_2022(c) for c in clips], catalog.COLUMNS_2022
        elif source == "birdclef-2025":
            rows, columns = [_row_2025(c) for c in clips], catalog.COLUMNS_2025
        elif source == TARGET_SOURCE:
            rows = [{**_row_2025(c), "class_name": c.primary.class_name} for c in clips]
            columns = catalog.COLUMNS_2026
        else:
            rows, columns = [_row_2022(c) for c in clips], catalog.COLUMNS_2023
        catalog.write_csv(folder / catalog.SOURCES[source].metadata, columns, rows)
        classes = sorted({c.primary.code for c in clips})
        if source == TARGET_SOURCE:
            classes = [s.code for s in target_classes]
            _write_taxonomy(folder, source, target_classes)
        elif catalog.SOURCES[source].taxonomy:
            _write_taxonomy(folder, source, species)
        if catalog.SOURCES[source].taxonomy:
            _write_sample_submission(folder, source, classes)
    corrupt = [c.path for i, c in enumerate(c for c in plan.clips if c.broken) if i % 2 == 0]
    (out / "corrupt_files.json").write_text(json.dumps(corrupt, indent=1) + "\n")


def _xc_url(clip: Clip) -> str:
    return f"https://www.xeno-canto.org/{clip.xc_id}" if clip.xc_id else ""


def _row_2020(c: Clip) -> dict:
    lat = c.meta["latitude"]
    name = Path(c.path).name
    return {
        "rating": c.meta["rating"], "playback_used": "no", "ebird_code": c.primary.code,
        "channels": f"{c.channels} ({'stereo' if c.channels == 2 else 'mono'})",
        "date": c.meta["date"], "pitch": "Not specified", "duration": int(round(c.duration_s)),
        "filename": name, "speed": "Not specified", "species": c.primary.common_name,
        "number_of_notes": "Not specified", "title": f"XC{c.xc_id} {c.primary.common_name}",
        "secondary_labels": catalog.py_list([s.label_2020 for s in c.listed_secondaries]),
        "bird_seen": "yes", "sci_name": c.primary.scientific_name, "location": "Synthland",
        "latitude": "Not specified" if lat == "" else lat,
        "sampling_rate": f"{c.sample_rate_hz} (Hz)", "type": "call, song",
        "elevation": "100 m", "description": "", "bitrate_of_mp3": "128000 (bps)",
        "file_type": Path(name).suffix.lstrip("."), "volume": "Not specified",
        "background": "", "xc_id": c.xc_id, "url": _xc_url(c), "country": "Synthland",
        "author": c.author, "primary_label": c.primary.label_2020,
        "longitude": "Not specified" if c.meta["longitude"] == "" else c.meta["longitude"],
        "length": "Not specified", "time": c.meta["time"], "recordist": c.author,
        "license": LICENSE,
    }


def _common(c: Clip) -> dict:
    return {
        "primary_label": c.primary.code,
        "secondary_labels": catalog.py_list([s.code for s in c.listed_secondaries]),
        "type": c.meta["type"], "latitude": c.meta["latitude"],
        "longitude": c.meta["longitude"], "scientific_name": c.primary.scientific_name,
        "common_name": c.primary.common_name, "author": c.author, "license": LICENSE,
        "rating": c.meta["rating"], "url": _xc_url(c), "time": c.meta["time"],
        "date": c.meta["date"],
    }


def _row_2021(c: Clip) -> dict:
    return {**_common(c), "filename": Path(c.path).name}


def _row_2022(c: Clip) -> dict:
    return {**_common(c), "filename": f"{c.primary.code}/{Path(c.path).name}"}


def _row_2025(c: Clip) -> dict:
    row = _common(c)
    name = Path(c.path).name
    collection = "XC" if c.xc_id else ("iNat" if name.startswith("iNat") else "CSA")
    secondary = row["secondary_labels"] if c.listed_secondaries else "['']"
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
    if source in ("birdclef-2025", TARGET_SOURCE):
        rows = [{"primary_label": s.code, "inat_taxon_id": s.code if s.code.isdigit() else "",
                 "scientific_name": s.scientific_name, "common_name": s.common_name,
                 "class_name": s.class_name} for s in species]
        catalog.write_csv(folder / "taxonomy.csv", catalog.TAXONOMY_2025_COLUMNS, rows)
        return
    rows = [{"TAXON_ORDER": i + 1, "CATEGORY": "species", "SPECIES_CODE": s.code,
             "PRIMARY_COM_NAME": s.common_name, "SCI_NAME": s.scientific_name,
             "ORDER1": "Synthiformes", "FAMILY": "Synthidae (Synthbirds)",
             "SPECIES_GROUP": "Synthbirds", "REPORT_AS": ""}
            for i, s in enumerate(species) if s.class_name == "Aves"]
    catalog.write_csv(folder / catalog.SOURCES[source].taxonomy, catalog.EBIRD_TAXONOMY_COLUMNS,
                     rows, bom=source not in ("birdclef-2020", "birdclef-2021"))


def _write_sample_submission(folder: Path, source: str, classes: list) -> None:
    if source == "birdclef-2020":
        rows = [{"site": "site_1", "row_id": f"site_1_41e6fe6504a34bf6846938ba78d13df1_{t}",
                 "birds": "nocall"} for t in (5, 10, 15)]
        catalog.write_csv(folder / "sample_submission.csv", ("site", "row_id", "birds"), rows)
    elif source == "birdclef-2021":
        rows = [{"row_id": f"3575_COR_{t}", "birds": "nocall"} for t in (5, 10, 15)]
        catalog.write_csv(folder / "sample_submission.csv", ("row_id", "birds"), rows)
    elif source == "birdclef-2022":
        rows = [{"row_id": f"soundscape_1000170626_{classes[0]}_{t}", "target": False}
                for t in (5, 10, 15)]
        catalog.write_csv(folder / "sample_submission.csv", ("row_id", "target"), rows)
    else:
        stem = ("BC2026_Test_0001_S05_20250101_060000" if source == TARGET_SOURCE
                else "soundscape_1000170626")
        rows = [{"row_id": f"{stem}_{t}", **{c: 1 / len(classes) for c in classes}}
                for t in (5, 10, 15)]
        catalog.write_csv(folder / "sample_submission.csv", ("row_id", *classes), rows)


def write_truth(out: Path, clips: list, frames: dict) -> None:
    rows = [{
        "path": c.path, "source": c.source, "primary_label": c.primary.code,
        "secondary_labels": " ".join(s.code for s in c.secondaries),
        "xc_id": c.xc_id or "", "duration_s": c.duration_s,
        "sample_rate_hz": c.sample_rate_hz, "channels": c.channels,
        "frames": frames[str(out / c.path)], "broken": c.broken,
    } for c in clips]
    catalog.write_csv(out / "synth_truth.csv", tuple(rows[0]), rows)


def write_soundscape_labels(out: Path, plan: Planner, calls: list) -> None:
    """Every placed call (soundscape_calls.csv), and the labels of the labelled files:
    2021's in its form, the current year's in the 2026 form."""
    # The benchmark world's calls carry their level (world.py); the demo's do not.
    columns = ("path", "species", "start_s", "end_s", "snr_db")[
        : max((len(c) for c in calls), default=4)]
    catalog.write_csv(out / "soundscape_calls.csv", columns,
                     [dict(zip(columns, c)) for c in calls])
    windows = int(plan.spec.soundscape_s // 5)
    rows_2021, rows_2026 = [], []
    for sc in plan.soundscapes:
        if not sc["labelled"]:
            continue
        name = Path(sc["path"]).name
        for w in range(windows):
            end = (w + 1) * 5
            labels = sorted({sp for p, sp, a, b, *_ in calls
                             if p == sc["path"] and a < end and b > end - 5})
            if sc["source"] == "birdclef-2021":
                audio_id, site = name.split("_")[:2]
                rows_2021.append({"row_id": f"{audio_id}_{site}_{end}", "site": site,
                                  "audio_id": audio_id, "seconds": end,
                                  "birds": " ".join(labels) or "nocall"})
            else:
                rows_2026 += _rows_2026(name, end, labels, len(rows_2026))
    catalog.write_csv(out / catalog.SOURCES["birdclef-2021"].folder / FORM_2021,
                     catalog.SOUNDSCAPE_LABEL_COLUMNS, rows_2021)
    catalog.write_csv(out / catalog.SOURCES[TARGET_SOURCE].folder / FORM_2026,
                     catalog.SOUNDSCAPE_LABEL_COLUMNS_2026, rows_2026)


def _rows_2026(name: str, end: int, labels: list, k: int) -> list[dict]:
    """One window in the 2026 form, with that file's quirks: HH:MM:SS times, labels
    ';'-joined, and some windows split over several rows (one per annotator) or
    written twice, which readers must merge."""
    def clock(seconds):
        return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"

    row = {"filename": name, "start": clock(end - 5), "end": clock(end)}
    if len(labels) > 1 and k % 2 == 0:
        return [{**row, "primary_label": label} for label in labels]
    rows = [{**row, "primary_label": ";".join(labels)}]
    return rows * 2 if k % 7 == 3 else rows


def write_world(out: Path, plan: Planner, pool: list) -> None:
    """synth_world.json: the benchmark world's sites, who calls where, the twins."""
    world = {
        "sites": [dataclasses.asdict(site) for site in plan.sites],
        "calling_rate": {sp.code: [round(float(r), 3) for r in plan.occupancy[i]]
                         for i, sp in enumerate(pool)},
        "confusable_pairs": [[a.code, b.code] for a, b in voices.twin_pairs(pool)],
    }
    (out / "synth_world.json").write_text(json.dumps(world, indent=1) + "\n")


def read_truth(root: str | Path) -> list[dict]:
    """The generator's ground truth, one dict per audio file."""
    with open(Path(root) / "synth_truth.csv", newline="") as f:
        return list(csv.DictReader(f))
