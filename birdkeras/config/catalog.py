"""Each Kaggle download: its folder, metadata file, audio convention, taxonomy, columns.

`SOURCES` is the one list of sources birdkeras knows (the config validates
`data.sources` against it, ingest reads with it, `birdkeras kaggle` downloads with it,
the synthetic generator writes with it). Headers follow the real files (see
../shared/data/real/metadata/ and the competitions' data pages): each year has its
own columns, folder convention and value quirks.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Source:
    """Where one Kaggle download keeps its files, relative to the data root.

    audio_paths: how a metadata `filename` becomes a path under `folder`:
        "label_folder"  {audio_dir}/{label}/{filename}   (2020, 2021)
        "in_filename"   {audio_dir}/{filename}, the filename holds the label folder
        "xc_halves"     {A-M|N-Z}/{label}/{filename}      (Xeno-Canto extended)
    """

    name: str
    folder: str
    metadata: str
    audio_dir: str
    audio_paths: str
    label_column: str = "primary_label"
    taxonomy: str | None = None
    # Kaggle references: "competition:NAME" or "dataset:OWNER/SLUG".
    kaggle: tuple[str, ...] = ()
    # Passive recordings of the competition's sites (labelled ones: birdkeras.soundscapes).
    soundscapes: str | None = "train_soundscapes"


SOURCES = {s.name: s for s in (
    Source("birdclef-2020", "birdsong-recognition", "train.csv", "train_audio", "label_folder",
           "ebird_code", "eBird_Taxonomy_v2019.csv", ("competition:birdsong-recognition",)),
    Source("birdclef-2021", "birdclef-2021", "train_metadata.csv", "train_short_audio",
           "label_folder", taxonomy="eBird_Taxonomy_v2019.csv",
           kaggle=("competition:birdclef-2021",)),
    Source("birdclef-2022", "birdclef-2022", "train_metadata.csv", "train_audio", "in_filename",
           taxonomy="eBird_Taxonomy_v2021.csv", kaggle=("competition:birdclef-2022",)),
    Source("birdclef-2023", "birdclef-2023", "train_metadata.csv", "train_audio", "in_filename",
           taxonomy="eBird_Taxonomy_v2021.csv", kaggle=("competition:birdclef-2023",)),
    Source("birdclef-2024", "birdclef-2024", "train_metadata.csv", "train_audio", "in_filename",
           taxonomy="eBird_Taxonomy_v2021.csv", kaggle=("competition:birdclef-2024",)),
    Source("birdclef-2025", "birdclef-2025", "train.csv", "train_audio", "in_filename",
           taxonomy="taxonomy.csv", kaggle=("competition:birdclef-2025",)),
    Source("birdclef-2026", "birdclef-2026", "train.csv", "train_audio", "in_filename",
           taxonomy="taxonomy.csv", kaggle=("competition:birdclef-2026",)),
    Source("xeno-canto", "xeno-canto-extended", "train_extended.csv", "", "xc_halves",
           "ebird_code", kaggle=("dataset:rohanrao/xeno-canto-bird-recordings-extended-a-m",
                                 "dataset:rohanrao/xeno-canto-bird-recordings-extended-n-z"),
           soundscapes=None),
)}
# Labelled soundscapes as a training source: one manifest row per labelled 5 s window
# (multi-hot labels), read from the competition's label file (birdkeras.soundscapes).
SOUNDSCAPE_SOURCES = {"birdclef-2021-soundscapes": "birdclef-2021",
                      "birdclef-2026-soundscapes": "birdclef-2026"}
NAMES = (*SOURCES, *SOUNDSCAPE_SOURCES)

# BirdCLEF 2020 (birdsong-recognition) train.csv, also Xeno-Canto extended's train_extended.csv.
COLUMNS_2020 = (
    "rating", "playback_used", "ebird_code", "channels", "date", "pitch", "duration",
    "filename", "speed", "species", "number_of_notes", "title", "secondary_labels",
    "bird_seen", "sci_name", "location", "latitude", "sampling_rate", "type", "elevation",
    "description", "bitrate_of_mp3", "file_type", "volume", "background", "xc_id", "url",
    "country", "author", "primary_label", "longitude", "length", "time", "recordist",
    "license",
)
COLUMNS_2021 = (
    "primary_label", "secondary_labels", "type", "latitude", "longitude", "scientific_name",
    "common_name", "author", "date", "filename", "license", "rating", "time", "url",
)
COLUMNS_2022 = (
    "primary_label", "secondary_labels", "type", "latitude", "longitude", "scientific_name",
    "common_name", "author", "license", "rating", "time", "url", "filename",
)
COLUMNS_2023 = (
    "primary_label", "secondary_labels", "type", "latitude", "longitude", "scientific_name",
    "common_name", "author", "license", "rating", "url", "filename",
)
COLUMNS_2025 = (
    "primary_label", "secondary_labels", "type", "filename", "collection", "rating", "url",
    "latitude", "longitude", "scientific_name", "common_name", "author", "license",
)
EBIRD_TAXONOMY_COLUMNS = (
    "TAXON_ORDER", "CATEGORY", "SPECIES_CODE", "PRIMARY_COM_NAME", "SCI_NAME", "ORDER1",
    "FAMILY", "SPECIES_GROUP", "REPORT_AS",
)
# BirdCLEF+ 2026's train.csv: 2025's columns and the taxon's class (Aves, Amphibia,
# Insecta, Mammalia), as public 2026 notebooks read it.
COLUMNS_2026 = (*COLUMNS_2025, "class_name")
TAXONOMY_2025_COLUMNS = ("primary_label", "inat_taxon_id", "scientific_name", "common_name",
                         "class_name")
SOUNDSCAPE_LABEL_COLUMNS = ("row_id", "site", "audio_id", "seconds", "birds")  # 2021 form
SOUNDSCAPE_LABEL_COLUMNS_2026 = ("filename", "start", "end", "primary_label")


def audio_path(source: str, label: str, filename: str) -> str:
    """The audio path of a metadata row, relative to the data root."""
    src = SOURCES[source]
    if src.audio_paths == "xc_halves":
        return f"{src.folder}/{xc_folder(label)}/{label}/{filename}"
    if src.audio_paths == "label_folder":
        return f"{src.folder}/{src.audio_dir}/{label}/{filename}"
    return f"{src.folder}/{src.audio_dir}/{filename}"


def xc_folder(code: str) -> str:
    """Xeno-Canto extended splits species into two datasets by first letter."""
    return "A-M" if code[:1].upper() <= "M" else "N-Z"


def write_csv(path: Path, columns, rows, bom: bool = False) -> None:
    """Writes rows (dicts) with exactly `columns`; `bom` prepends a UTF-8 BOM as eBird does.

    Args:
        path: the file to write.
        columns: the header, in order.
        rows: dicts; missing keys are empty, unknown keys an error.
        bom: prepend a UTF-8 BOM.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8-sig" if bom else "utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="raise")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in columns})


def py_list(values) -> str:
    """Python-literal list as the metadata writes it: "['a', 'b']"; an empty list is "[]"."""
    return "[" + ", ".join(repr(v) for v in values) + "]"
