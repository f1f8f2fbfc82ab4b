"""Typed configuration parsed once: flags generated from the dataclasses, defaults defined once,
`--resume` applying or naming every flag, exit codes of a bad `--out`."""
import argparse
import json
import re
from dataclasses import fields, make_dataclass

import pytest

from analysis.rule import DupeRule
from orchestrator import flags
from orchestrator.cli.main import main
from orchestrator.cli.parser import get_args_parser
from orchestrator.config import RunConfig, ScanSettings, new_config, resume_config
from orchestrator.demo_data import DEMO_HYP, DemoSettings
from orchestrator.pipeline.search_space import TuneSettings
from tests.conftest import write_noise_dataset
from trainers.hyp import Hyp, hp


def subparser(name: str) -> argparse.ArgumentParser:
    parser = get_args_parser()
    return parser._subparsers._group_actions[0].choices[name]


def help_defaults(parser: argparse.ArgumentParser) -> dict[str, str]:
    """dest -> the default its --help states, for every flag that states one."""
    out = {}
    for action in parser._actions:
        m = re.search(r"\(default ([^)]*)\)\s*$", action.help or "")
        if m:
            out[action.dest] = m.group(1)
    return out


def flagged(cls) -> list:
    return [f for f in fields(cls) if "help" in f.metadata]


@pytest.mark.parametrize("command,classes,hyp", [
    ("run", (RunConfig, ScanSettings, DupeRule, Hyp), Hyp()),
    ("demo", (RunConfig, ScanSettings, DupeRule, Hyp, DemoSettings), DEMO_HYP),
    ("sanity", (ScanSettings, Hyp), Hyp()),
    ("tune", (TuneSettings, ScanSettings, Hyp), Hyp())])
def test_help_states_the_dataclass_defaults(command, classes, hyp):
    parser = subparser(command)
    stated = help_defaults(parser)
    dests = {a.dest for a in parser._actions}
    for cls in classes:
        for f in flagged(cls):
            assert f.name in dests, f"{cls.__name__}.{f.name} has no flag in `dupes {command}`"
            default = getattr(hyp, f.name) if cls is Hyp else flags.default_of(f)
            if default is None and "none:" in f.metadata["help"]:
                assert f.name not in stated  # the help says what none means instead
                continue
            assert stated[f.name] == flags._default_text(default), (cls.__name__, f.name)


def test_no_flags_give_the_dataclass_defaults():
    args = get_args_parser().parse_args(["run", "data"])
    cfg = new_config(args, data_dir="/d", run_dir="/r")
    assert cfg == RunConfig("/d", "/r")
    assert cfg.rule == DupeRule() and cfg.hyp == Hyp() and cfg.rule.min_ratio == 2.0
    demo = get_args_parser().parse_args(["demo"])
    demo_cfg = new_config(demo, data_dir="/d", run_dir="/r", hyp=DEMO_HYP)
    # the demo sets its shifts; its flips are left to the mirror check, and so is the rest
    assert demo_cfg.hyp.translate == 1 and demo_cfg.hyp_set == ["translate"]
    assert new_config(get_args_parser().parse_args(["run", "--no-flip", "--lr", "0.1"]),
                      data_dir="/d", run_dir="/r").hyp_set == ["flip", "lr"]


def test_a_new_hyperparameter_is_a_flag_and_recorded_without_other_edits(tmp_path):
    hyp2 = make_dataclass("Hyp2", [("dropout", float, hp(0.1, "share of activations dropped",
                                                         min=0))], bases=(Hyp,), frozen=True)
    parser = argparse.ArgumentParser()
    flags.add_flags(parser, hyp2)
    assert "(default 0.1)" in parser.format_help()
    hyp = flags.build(hyp2, parser.parse_args(["--dropout", "0.3", "--epochs", "4"]))
    assert (hyp.dropout, hyp.epochs, hyp.lr) == (0.3, 4, Hyp().lr)
    with pytest.raises(SystemExit):
        parser.parse_args(["--dropout", "-1"])
    cfg = RunConfig("/d", "/r", hyp=hyp)
    assert json.loads(json.dumps(cfg.to_dict()))["hyp"]["dropout"] == 0.3  # config.json
    # and every field of the real Hyp is a flag of `dupes run`
    args = get_args_parser().parse_args(["run", "d", "--momentum", "0.8",
                                         "--eval-batch-size", "64", "--no-tta"])
    hyp = new_config(args, data_dir="/d", run_dir="/r").hyp
    assert (hyp.momentum, hyp.eval_batch_size, hyp.tta) == (0.8, 64, False)


@pytest.mark.parametrize("argv", [
    ["run", "d", "--min-ratio", "nan"], ["run", "d", "--min-ratio", "-1"],
    ["run", "d", "--gpus-per-training", "-1"], ["run", "d", "--lr", "nan"],
    ["run", "d", "--lr", "inf"], ["run", "d", "--max-failures", "-1"],
    ["report", "r", "--threshold", "0"], ["run", "d", "--resources-per-training", '{"GPU": 1}']])
def test_bad_values_are_refused_where_they_are_parsed(argv, capsys):
    with pytest.raises(SystemExit) as e:
        get_args_parser().parse_args(argv)
    assert e.value.code == 2
    assert argv[-2] in capsys.readouterr().err


def test_rule_validates_itself():
    with pytest.raises(ValueError, match="valid forms"):
        DupeRule("most", select="votes")
    with pytest.raises(ValueError, match="finite"):
        DupeRule(min_ratio=float("nan"))
    assert DupeRule("8", select="votes").votes.low == 8


def test_old_config_json_reads_into_the_typed_config():
    old = {"data_dir": "/d", "run_dir": "/mirror", "storage": "s3://b/runs/r1",
           "threshold": ">=9", "min_ratio": 0.0, "ignore_confirmed": True, "image_size": 16,
           "hyp": {**Hyp().to_dict(), "epochs": 3}}
    cfg = RunConfig.from_dict(old)
    assert cfg.storage == "s3://b/runs/r1" and cfg.scan.image_size == 16
    assert cfg.rule == DupeRule(">=9", 0.0, True, "votes") and cfg.hyp.epochs == 3
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    # heads recorded before --head-prune existed were fit once: a resume trains alike
    before = {k: v for k, v in Hyp().to_dict().items() if k != "head_prune"}
    assert Hyp().head_prune and not RunConfig.from_dict({**old, "hyp": before}).hyp.head_prune


def test_resume_config_applies_what_it_may_and_names_the_rest():
    saved = RunConfig("/d", "/r", max_failures=3, hyp=Hyp(epochs=7))
    args = get_args_parser().parse_args(["run", "--resume", "/r", "--epochs", "9",
                                         "--threshold", "9", "--cpus-per-training", "2",
                                         "--image-size", "32", "--no-sanity"])
    cfg, applied, ignored = resume_config(saved, args, run_dir="/moved")
    assert cfg.max_failures == 3  # not given: the saved value, not the flag's default
    assert (cfg.cpus_per_training, cfg.sanity, cfg.rule.threshold) == (2.0, False, "9")
    assert cfg.hyp.epochs == 7 and cfg.scan.image_size is None and cfg.run_dir == "/moved"
    assert set(applied) == {"--cpus-per-training", "--sanity", "--threshold"}
    assert ignored == {"--epochs": (7, 9), "--image-size": (None, 32)}


@pytest.mark.parametrize("occupied", ["folder", "file"])
def test_an_occupied_out_exits_2_and_loses_nothing(digit_data, tmp_path, capsys, occupied):
    out = tmp_path / "taken"
    if occupied == "folder":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    else:
        out.write_text("mine")
    assert main(["run", str(digit_data), "--out", str(out)]) == 2
    text = capsys.readouterr().out
    assert str(out) in text and "--resume" in text
    assert (out / "keep.txt" if occupied == "folder" else out).read_text() == "mine"
    assert main(["demo", "--out", str(out)]) == 2


def test_resume_warns_about_ignored_flags_and_honours_no_sanity(tmp_path, capsys):
    write_noise_dataset(tmp_path / "noise", per_class=24)
    run = tmp_path / "run"
    assert main(["run", str(tmp_path / "noise"), "--out", str(run), "--repeats", "1",
                 "--epochs", "1", "--batch-size", "16", "--epoch-losses", "0"]) == 1
    assert "--no-sanity" in capsys.readouterr().out  # the check failed: no training yet
    # nothing was trained yet: the hyperparameters may change too, the scan is kept
    assert main(["run", "--resume", str(run), "--no-sanity", "--epochs", "2",
                 "--max-failures", "4", "--threshold", "1"]) == 0
    out = capsys.readouterr().out
    assert "resume: --epochs 2 (was 1)" in out and "--resume ignores" not in out, out
    assert "resume: --sanity False (was True)" in out and "resume: --threshold 1" in out
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["max_failures"], cfg["hyp"]["epochs"], cfg["rule"]["threshold"]) == (4, 2, "1")
    assert json.loads((run / "summary.json").read_text())["n_trainings"] == 2
    # once trainings finished, a flag that would change what they learned is ignored
    from orchestrator.cli.parser import get_args_parser
    from orchestrator.config import resume_config
    from orchestrator.run.directory import Run
    opened = Run.open(run)
    args = get_args_parser().parse_args(["run", "--resume", str(run), "--epochs", "5",
                                         "--max-failures", "3"])
    cfg, applied, ignored = resume_config(opened.config(), args, run_dir=str(run),
                                          trained=bool(opened.completed()))
    assert ignored == {"--epochs": (2, 5)} and cfg.hyp.epochs == 2
    assert applied == {"--max-failures": (4, 3)}
