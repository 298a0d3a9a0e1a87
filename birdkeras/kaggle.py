"""Kaggle data in and out, and the Kaggle notebook environment.

    birdkeras kaggle download birdclef-2024 --root data/kaggle
    birdkeras kaggle publish tfrecords/b0_pre --id you/birdkeras-b0-pre --title "..."

`download` fetches a competition (or the Xeno-Canto extended datasets) through the
`kaggle` package and unzips it into the folder `birdkeras ingest` expects
(`catalog.SOURCES`). `publish` turns a TFRecord folder into a Kaggle dataset
(writes `dataset-metadata.json`, then creates the dataset or adds a version), so a TPU
notebook can read the shards from GCS (`data_path`).

Every network call goes through `_network`; everything around it (names, layout,
metadata, credentials, errors) is tested without a network. Credentials come from
KAGGLE_USERNAME + KAGGLE_KEY, KAGGLE_API_TOKEN or ~/.kaggle/ and are never written.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

from birdkeras.config import catalog
from birdkeras.records import format as record_format
from birdkeras.errors import UserError

METADATA = "dataset-metadata.json"


class KaggleError(UserError):
    """Kaggle could not be used: credentials, network, names; the message says what to do."""


def has_credentials() -> bool:
    config_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle"))
    return bool((os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"))
                or os.environ.get("KAGGLE_API_TOKEN")
                or (config_dir / "kaggle.json").is_file()
                or (config_dir / "access_token").is_file())


def _network(action: str, **kwargs):
    """The one place that talks to kaggle.com (through the `kaggle` package)."""
    if not has_credentials():
        raise KaggleError("no Kaggle credentials: set KAGGLE_USERNAME and KAGGLE_KEY (or "
                          "KAGGLE_API_TOKEN), or put kaggle.json in ~/.kaggle/ "
                          "(kaggle.com -> Settings -> API)")
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi  # noqa: PLC0415 - network client

        api = KaggleApi()
        api.authenticate()
        if action == "download":
            kind, _, ref = kwargs["ref"].partition(":")
            if kind == "competition":
                return api.competition_download_files(ref, path=kwargs["path"], quiet=False)
            return api.dataset_download_files(ref, path=kwargs["path"], quiet=False)
        if action == "dataset_exists":
            try:
                api.dataset_status(kwargs["id"])
                return True
            except Exception as err:  # noqa: BLE001 - the client raises HTTP errors as-is
                if "404" in str(err) or "not found" in str(err).lower():
                    return False
                raise
        if action == "create":
            return api.dataset_create_new(kwargs["folder"], public=False, quiet=False)
        if action == "version":
            return api.dataset_create_version(kwargs["folder"], kwargs["message"], quiet=False)
        raise ValueError(f"unknown action {action}")
    except KaggleError:
        raise
    except (ConnectionError, TimeoutError, OSError) as err:
        raise KaggleError(f"cannot reach kaggle.com ({action}): {err}. Check the network "
                          "(on Kaggle: Settings -> Internet on)") from err


def download(source: str, root: str | Path, keep_zip: bool = False) -> Path:
    """Downloads and unzips `source` into its folder under `root` (`catalog.SOURCES`)."""
    if source not in catalog.SOURCES or not catalog.SOURCES[source].kaggle:
        downloadable = sorted(n for n, s in catalog.SOURCES.items() if s.kaggle)
        raise KaggleError(f"unknown source {source!r}; one of {downloadable}")
    target = Path(root) / catalog.SOURCES[source].folder
    zips = Path(root) / "_downloads"
    zips.mkdir(parents=True, exist_ok=True)
    for ref in catalog.SOURCES[source].kaggle:
        before = set(zips.glob("*.zip"))
        _network("download", ref=ref, path=str(zips))
        new = sorted(set(zips.glob("*.zip")) - before) or sorted(
            zips.glob(f"{ref.split('/')[-1].split(':')[-1]}*.zip"))
        if not new:
            raise KaggleError(f"{ref}: the download left no zip in {zips}")
        for archive in new:
            _unzip(archive, target)
            if not keep_zip:
                archive.unlink()
    metadata = target / catalog.SOURCES[source].metadata
    if not metadata.is_file():
        raise KaggleError(f"{source}: {metadata} missing after unzipping; the download does "
                          "not have the layout birdkeras ingest expects")
    return target


def _unzip(archive: Path, target: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as z:
            for member in z.namelist():
                resolved = (target / member).resolve()
                if not resolved.is_relative_to(target.resolve()):
                    raise KaggleError(f"{archive}: member {member!r} would unzip outside {target}")
            z.extractall(target)
    except zipfile.BadZipFile as err:
        raise KaggleError(f"{archive} is not a valid zip (interrupted download?): {err}") from err


def write_metadata(folder: str | Path, dataset_id: str, title: str,
                   license_name: str = "CC-BY-NC-SA-4.0") -> Path:
    """`dataset-metadata.json` for the Kaggle datasets API.

    Args:
        folder: the dataset folder.
        dataset_id: OWNER/SLUG.
        title: 6-50 characters.
        license_name: a Kaggle licence name.

    Returns:
        The metadata file.
    """
    owner, _, slug = dataset_id.partition("/")
    if not owner or not slug or "/" in slug or not 6 <= len(title) <= 50:
        raise KaggleError(f"dataset id must be OWNER/SLUG and the title 6-50 characters; got "
                          f"id={dataset_id!r}, title={title!r}")
    path = Path(folder) / METADATA
    path.write_text(json.dumps({"title": title, "id": dataset_id,
                                "licenses": [{"name": license_name}]}, indent=1) + "\n")
    return path


def publish(folder: str | Path, dataset_id: str, title: str,
            message: str = "birdkeras TFRecords") -> str:
    """Creates the Kaggle dataset `dataset_id` from a TFRecord folder, or versions it.

    Args:
        folder: a finished TFRecord build.
        dataset_id: OWNER/SLUG.
        title: 6-50 characters.
        message: version notes.

    Returns:
        "created" or "versioned".
    """
    folder = Path(folder)
    shards = sorted(folder.glob(f"*{record_format.SHARD_SUFFIX}"))
    if not shards or not (folder / record_format.CARD).is_file():
        raise KaggleError(f"{folder} holds no finished TFRecord build (*.tfrec and "
                          f"{record_format.CARD}): run birdkeras tfrecords build first")
    write_metadata(folder, dataset_id, title)
    exists = _network("dataset_exists", id=dataset_id)
    _network("version" if exists else "create", folder=str(folder), message=message)
    return "versioned" if exists else "created"


# ----------------------------------------------------------------------------------
# Inside a Kaggle notebook.


def on_kaggle() -> bool:
    return "KAGGLE_KERNEL_RUN_TYPE" in os.environ or Path("/kaggle/input").is_dir()


def data_path(dataset_slug: str, local: str | Path) -> str:
    """The GCS path of an attached Kaggle dataset on Kaggle (TPUs read GCS), else `local`."""
    if on_kaggle():
        from kaggle_datasets import KaggleDatasets  # noqa: PLC0415 - Kaggle images only

        return KaggleDatasets().get_gcs_path(dataset_slug)
    return str(local)


def wandb_mode_from_secret(secret: str = "WANDB") -> str:
    """"online" with the Kaggle secret `secret` as WANDB_API_KEY (in memory), else "offline"."""
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    if on_kaggle():
        try:
            from kaggle_secrets import UserSecretsClient  # noqa: PLC0415 - Kaggle images only

            os.environ["WANDB_API_KEY"] = UserSecretsClient().get_secret(secret)
            return "online"
        except Exception:  # noqa: BLE001 - no such secret, or secrets not attached
            pass
    return "offline"
