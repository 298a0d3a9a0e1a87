"""`birdkeras kaggle`: everything around the one network function, without a network."""

import json
import zipfile

import pytest

from birdkeras import cli
from birdkeras import kaggle
from birdkeras.config import catalog


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "empty"))


def _fake_kaggle(monkeypatch, files: dict, calls: list, exists=False):
    """Stands in for kaggle.com: a download leaves a zip of `files`."""

    def network(action, **kwargs):
        calls.append((action, kwargs))
        if action == "download":
            name = kwargs["ref"].split("/")[-1].split(":")[-1]
            with zipfile.ZipFile(f"{kwargs['path']}/{name}.zip", "w") as z:
                for member, text in files.items():
                    z.writestr(member, text)
        if action == "dataset_exists":
            return exists
        return None

    monkeypatch.setattr(kaggle, "_network", network)


def test_download_unzips_into_the_ingest_layout(monkeypatch, tmp_path):
    calls = []
    _fake_kaggle(monkeypatch, {"train_metadata.csv": "primary_label\n",
                               "train_audio/x/a.ogg": "ogg"}, calls)
    target = kaggle.download("birdclef-2024", tmp_path)
    assert target == tmp_path / catalog.SOURCES["birdclef-2024"].folder
    assert (target / "train_audio" / "x" / "a.ogg").is_file()
    assert calls == [("download", {"ref": "competition:birdclef-2024",
                                   "path": str(tmp_path / "_downloads")})]
    assert not list((tmp_path / "_downloads").glob("*.zip"))  # zips removed after unzip


def test_xeno_canto_is_two_datasets_into_one_folder(monkeypatch, tmp_path):
    calls = []
    _fake_kaggle(monkeypatch, {"train_extended.csv": "ebird_code\n"}, calls)
    target = kaggle.download("xeno-canto", tmp_path)
    assert target.name == "xeno-canto-extended"
    assert [c[1]["ref"] for c in calls] == list(catalog.SOURCES["xeno-canto"].kaggle)


def test_download_errors_are_clear(monkeypatch, tmp_path, no_credentials, capsys):
    with pytest.raises(kaggle.KaggleError, match="unknown source 'birdclef-2019'"):
        kaggle.download("birdclef-2019", tmp_path)
    # Real network function, no credentials: stops before any network use.
    assert cli.main(["kaggle", "download", "birdclef-2024", "--root", str(tmp_path)]) == 2
    assert "no Kaggle credentials" in capsys.readouterr().err
    _fake_kaggle(monkeypatch, {"something_else.csv": "x\n"}, [])
    with pytest.raises(kaggle.KaggleError, match="train_metadata.csv missing"):
        kaggle.download("birdclef-2023", tmp_path)
    _fake_kaggle(monkeypatch, {"../escape.csv": "x\n"}, [])
    with pytest.raises(kaggle.KaggleError, match="outside"):
        kaggle.download("birdclef-2022", tmp_path / "z")


def test_network_failures_become_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "not-a-real-key")
    from kaggle.api.kaggle_api_extended import KaggleApi  # the package's client

    def unreachable(self, *args, **kwargs):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(KaggleApi, "authenticate", lambda self: None)
    monkeypatch.setattr(KaggleApi, "competition_download_files", unreachable)
    with pytest.raises(kaggle.KaggleError, match="cannot reach kaggle.com"):
        kaggle.download("birdclef-2024", tmp_path)


def _tfrecord_folder(tmp_path):
    folder = tmp_path / "records"
    folder.mkdir()
    (folder / "train-00000-of-00001.tfrec").write_bytes(b"\0")
    (folder / "dataset_card.json").write_text("{}")
    return folder


def test_publish_writes_metadata_then_creates_or_versions(monkeypatch, tmp_path, capsys):
    folder = _tfrecord_folder(tmp_path)
    calls = []
    _fake_kaggle(monkeypatch, {}, calls, exists=False)
    assert cli.main(["kaggle", "publish", str(folder), "--id", "me/bk-pre",
                     "--title", "birdkeras pretraining TFRecords"]) == 0
    assert "created Kaggle dataset me/bk-pre" in capsys.readouterr().out
    meta = json.loads((folder / kaggle.METADATA).read_text())
    assert meta == {"title": "birdkeras pretraining TFRecords", "id": "me/bk-pre",
                    "licenses": [{"name": "CC-BY-NC-SA-4.0"}]}
    assert [c[0] for c in calls] == ["dataset_exists", "create"]
    calls.clear()
    _fake_kaggle(monkeypatch, {}, calls, exists=True)
    assert kaggle.publish(folder, "me/bk-pre", "birdkeras pretraining TFRecords", "v2") == "versioned"
    assert calls[-1] == ("version", {"folder": str(folder), "message": "v2"})


def test_publish_checks_its_inputs(tmp_path, no_credentials):
    with pytest.raises(kaggle.KaggleError, match="no finished TFRecord build"):
        kaggle.publish(tmp_path, "me/x-data", "a good title")
    folder = _tfrecord_folder(tmp_path)
    with pytest.raises(kaggle.KaggleError, match="OWNER/SLUG"):
        kaggle.publish(folder, "no-owner", "a good title")
    with pytest.raises(kaggle.KaggleError, match="no Kaggle credentials"):
        kaggle.publish(folder, "me/x-data", "a good title")


def test_off_kaggle_paths_and_wandb(monkeypatch, tmp_path):
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    if kaggle.on_kaggle():
        pytest.skip("running on Kaggle")
    assert kaggle.data_path("birdkeras-b0-pre", tmp_path) == str(tmp_path)
    assert kaggle.wandb_mode_from_secret() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert kaggle.wandb_mode_from_secret() == "online"
