"""Metadata tables of each Kaggle download, with their real headers and quirks.

Headers follow the real files (see ../shared/data/real/metadata/ and the competitions'
data pages): each year has its own columns, folder convention and value quirks.
"""

from __future__ import annotations

import csv
from pathlib import Path

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
TAXONOMY_2025_COLUMNS = ("primary_label", "inat_taxon_id", "scientific_name", "common_name",
                         "class_name")
SOUNDSCAPE_LABEL_COLUMNS = ("row_id", "site", "audio_id", "seconds", "birds")

# Where each source keeps its files, relative to the data root.
SOURCE_DIRS = {
    "birdclef-2020": "birdsong-recognition",
    "birdclef-2021": "birdclef-2021",
    "birdclef-2022": "birdclef-2022",
    "birdclef-2023": "birdclef-2023",
    "birdclef-2024": "birdclef-2024",
    "birdclef-2025": "birdclef-2025",
    "xeno-canto": "xeno-canto-extended",
}
METADATA_FILES = {
    "birdclef-2020": "train.csv",
    "birdclef-2021": "train_metadata.csv",
    "birdclef-2022": "train_metadata.csv",
    "birdclef-2023": "train_metadata.csv",
    "birdclef-2024": "train_metadata.csv",
    "birdclef-2025": "train.csv",
    "xeno-canto": "train_extended.csv",
}
AUDIO_DIRS = {
    "birdclef-2020": "train_audio",
    "birdclef-2021": "train_short_audio",
    "birdclef-2022": "train_audio",
    "birdclef-2023": "train_audio",
    "birdclef-2024": "train_audio",
    "birdclef-2025": "train_audio",
    "xeno-canto": "",  # A-M/<code>/ or N-Z/<code>/
}
TAXONOMY_FILES = {
    "birdclef-2020": "eBird_Taxonomy_v2019.csv",
    "birdclef-2021": "eBird_Taxonomy_v2019.csv",
    "birdclef-2022": "eBird_Taxonomy_v2021.csv",
    "birdclef-2023": "eBird_Taxonomy_v2021.csv",
    "birdclef-2024": "eBird_Taxonomy_v2021.csv",
    "birdclef-2025": "taxonomy.csv",
}


def xc_folder(code: str) -> str:
    """Xeno-Canto extended splits species into two datasets by first letter."""
    return "A-M" if code[:1].upper() <= "M" else "N-Z"


def write_csv(path: Path, columns, rows, bom: bool = False) -> None:
    """Writes rows (dicts) with exactly `columns`; `bom` prepends a UTF-8 BOM as eBird does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8-sig" if bom else "utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="raise")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in columns})


def py_list(values) -> str:
    """Python-literal list as the metadata writes it: "['a', 'b']"; an empty list is "[]"."""
    return "[" + ", ".join(repr(v) for v in values) + "]"
