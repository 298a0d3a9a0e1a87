import pytest
import yaml

from birdkeras import cli
from birdkeras import config as config_lib
from birdkeras.config import ConfigError, load_config

from conftest import REPO


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_file_loads(path):
    cfg = load_config(path)
    assert cfg.name == path.stem


def test_defaults_then_base_then_file_then_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("audio: {window_s: 10, num_mel_bins: 64}\nseed: 1\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\naudio: {window_s: 7}\n")
    cfg = load_config(tmp_path / "child.yaml", ["audio.window_s=3", "data.num_folds=4"])
    assert cfg.audio.window_s == 3.0  # --set beats the file
    assert cfg.audio.num_mel_bins == 64  # the base survives where the file is silent
    assert cfg.seed == 1
    assert cfg.data.num_folds == 4
    assert cfg.audio.sample_rate_hz == 32000  # default


def test_override_values_are_cast_to_the_field_type():
    cfg = load_config(None, ["audio.window_s=5", "data.sources=[birdclef-2021, xeno-canto]",
                             "audio.max_duration_s=null", "data.root=2024"])
    assert isinstance(cfg.audio.window_s, float)
    assert cfg.data.sources == ("birdclef-2021", "xeno-canto")
    assert cfg.audio.max_duration_s is None
    assert cfg.data.root == "2024"


def test_unknown_key_names_the_nearest_valid_one():
    with pytest.raises(ConfigError, match=r"unknown key 'audio\.sample_rate'.*'audio\.sample_rate_hz'"):
        load_config(None, ["audio.sample_rate=32000"])


def test_unknown_key_in_a_file(tmp_path):
    (tmp_path / "c.yaml").write_text("data:\n  num_fold: 3\n")
    with pytest.raises(ConfigError, match=r"'data\.num_fold'.*did you mean 'data\.num_folds'"):
        load_config(tmp_path / "c.yaml")


@pytest.mark.parametrize("override,match", [
    ("audio.sample_rate_hz=fast", r"audio\.sample_rate_hz must be int, got 'fast'"),
    ("audio.window_s=[1, 2]", r"audio\.window_s must be float"),
    ("data.dedupe=3", r"data\.dedupe must be bool"),
    ("data.sources=[birdclef-2032]", r"'birdclef-2032' is not one of .*did you mean"),
    ("audio=5", r"'audio' must be a mapping"),
])
def test_wrong_types_fail_naming_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


def test_cross_field_check_names_the_values():
    with pytest.raises(ConfigError, match=r"audio\.fmax_hz=20000.0 must be <= sample_rate_hz / 2 = 16000"):
        load_config(None, ["audio.sample_rate_hz=32000", "audio.fmax_hz=20000"])


def test_only_one_level_of_base(tmp_path):
    (tmp_path / "a.yaml").write_text("seed: 1\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    (tmp_path / "c.yaml").write_text("base: b.yaml\n")
    with pytest.raises(ConfigError, match="only one level"):
        load_config(tmp_path / "c.yaml")


def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="must look like 'section.key=value'"):
        load_config(None, ["audio.window_s"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_saved_config_loads_back_equal(tmp_path):
    cfg = load_config(REPO / "configs" / "demo_ft.yaml", ["seed=3"])
    path = config_lib.save_config(cfg, tmp_path / "config.yaml")
    assert load_config(path) == cfg
    assert yaml.safe_load(path.read_text())["data"]["sources"] == ["birdclef-2026"]


def test_cli_reports_config_errors_with_exit_2(capsys):
    rc = cli.main(["config", "--cfg", str(REPO / "configs/demo_pre.yaml"),
                   "--set", "tfrecords.workrs=2"])
    assert rc == 2
    assert "did you mean 'tfrecords.workers'" in capsys.readouterr().err


# Every subcommand, with an option its help must describe.
SUBCOMMANDS = {"synth": "--labelled-soundscapes", "config": "--set", "ingest": "--cfg",
               "tfrecords": "--beam-option", "train": "--workdir", "export": "--formats",
               "predict": "--runtime", "evaluate": "--pred", "kaggle": "{download,publish}",
               "pseudolabel": "--model", "embed": "--annotations", "route": "--embeddings",
               "search": "--query", "embed-cache": "--cache", "demo": "--workdir", "blend": "--oof"}


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_every_subcommand_has_help_naming_its_options(capsys):
    parser = cli.build_parser()
    (commands,) = [a.choices for a in parser._subparsers._group_actions]
    assert set(commands) == set(SUBCOMMANDS)  # a new subcommand needs its line above
    top = _help([], capsys)
    for name, option in SUBCOMMANDS.items():
        assert name in top
        out = _help([name], capsys)
        assert out.startswith(f"usage: birdkeras {name}") and option in out, name


def test_user_errors_exit_2_and_bugs_keep_their_traceback(monkeypatch, capsys):
    assert cli.main(["config", "--cfg", "nowhere.yaml"]) == 2
    assert "config file not found: nowhere.yaml" in capsys.readouterr().err

    def broken(args):
        raise ValueError("an internal bug, not bad input")

    monkeypatch.setattr(cli, "cmd_config", broken)
    with pytest.raises(ValueError, match="internal bug"):
        cli.main(["config", "--cfg", "nowhere.yaml"])


def test_paths_are_checked_where_they_are_used_not_when_a_config_loads(tmp_path):
    # A run's resolved config, copied to another machine, still loads.
    cfg = load_config(REPO / "configs" / "b0_ft.yaml", [
        "train.init_from=/gone/best.keras", "model.weights=/gone/b0.h5",
        "infer.class_order=/gone/sample_submission.csv"])
    assert load_config(config_lib.save_config(cfg, tmp_path / "config.yaml")) == cfg


def test_data_paths_resolve_under_the_data_root():
    cfg = load_config(REPO / "configs" / "b0_ft.yaml", ["data.root=/kaggle/input"])
    assert cfg.data_path(cfg.augment.background_dir) == "/kaggle/input/birdclef-2026/train_soundscapes"
    assert cfg.data_path("/abs/noise") == "/abs/noise"
    assert cfg.data_path("gs://bucket/noise") == "gs://bucket/noise"
    assert cfg.data_path(None) is None


def test_monitoring_soundscapes_needs_a_soundscape_source():
    with pytest.raises(ConfigError, match="needs train.val_soundscapes"):
        load_config(None, ["train.monitor=val_soundscape_macro_auc"])
    with pytest.raises(ConfigError, match=r"train.val_soundscapes='birdclef-2062' is not one of"):
        load_config(None, ["train.val_soundscapes=birdclef-2062"])
    with pytest.raises(ConfigError, match="infer.time_budget_s=0.0 must be > 0"):
        load_config(None, ["infer.time_budget_s=0"])


@pytest.mark.parametrize("written, value", [("1e-3", 1e-3), ("3e-4", 3e-4), ("1E6", 1e6),
                                            ("1_000.0", 1000.0), ("1.0e-3", 1e-3)])
def test_floats_load_as_people_write_them_in_files_and_overrides(tmp_path, written, value):
    (tmp_path / "run.yaml").write_text(f"train:\n  lr_max: {written}\n  lr_start: 1e-9\n"
                                       "  lr_min: 1e-9\n")
    from_file = load_config(tmp_path / "run.yaml")
    from_set = load_config(None, [f"train.lr_max={written}", "train.lr_start=1e-9",
                                  "train.lr_min=1e-9"])
    assert from_file.train.lr_max == from_set.train.lr_max == value
    assert isinstance(from_file.train.lr_max, float)
    # Saved with the run as a float any YAML reader reads as one, and loaded back equal.
    saved = config_lib.save_config(from_file, tmp_path / "resolved.yaml")
    assert yaml.safe_load(saved.read_text())["train"]["lr_max"] == value
    assert load_config(saved) == from_file


def test_integers_accept_an_exponent_only_for_whole_numbers():
    assert load_config(None, ["train.epochs=1e1"]).train.epochs == 10
    with pytest.raises(ConfigError, match="train.epochs must be a whole number, got 1.5"):
        load_config(None, ["train.epochs=1.5e0"])


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_stage_of_a_config_loads(path):
    cfg = load_config(path)
    for stage in cfg.train.stages:
        assert load_config_stage(cfg, REPO / stage).name == (REPO / stage).stem


def load_config_stage(cfg, path):
    return config_lib.load_stage(config_lib.to_dict(cfg), path)
