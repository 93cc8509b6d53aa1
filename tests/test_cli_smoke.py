import os
import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, "-m", "cotdistill", *args], capture_output=True, text=True)


def test_help_lists_commands():
    r = run("--help")
    assert r.returncode == 0
    assert "version" in r.stdout


def test_unknown_command_exit_2():
    r = run("no-such-command")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr


def test_switches_show_as_switches_and_flags_match_yaml_keys():
    r = subprocess.run([sys.executable, "-m", "cotdistill", "train", "--help"], capture_output=True, text=True,
                       env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0
    assert "<bool>" not in r.stdout and "--mix " in r.stdout and "--lora / --full" in r.stdout
    assert "--learning-rate, --lr" in r.stdout
    from cotdistill.train import TrainConfig

    assert TrainConfig.validated({"lr": 0.01}).learning_rate == 0.01  # the CLI's short spelling in YAML


def test_usage_errors_are_one_line():
    r = subprocess.run([sys.executable, "-m", "cotdistill", "train", "--studnet", "x"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: No such option: --studnet")
    assert len(r.stderr.strip().splitlines()) == 1


def test_flags_of_config_fields_take_their_help_and_default_from_the_config():
    """One source for a setting: the flag of a config field is named after it and its help is the
    field's description and default (train, evaluate, generate, select)."""
    import typer.main

    from cotdistill.cli import app
    from cotdistill.curate import CurateOptions
    from cotdistill.evaluate import EvalConfig
    from cotdistill.generate import GenerateConfig
    from cotdistill.select import SelectConfig
    from cotdistill.train import TrainConfig

    group = typer.main.get_command(app)
    checked = 0
    for name, model, least in (("train", TrainConfig, 20), ("evaluate", EvalConfig, 7), ("generate", GenerateConfig, 19),
                               ("select", SelectConfig, 20), ("curate", CurateOptions, 4)):
        n = 0
        for p in group.commands[name].params:
            field = {"lr": "learning_rate"}.get(p.name, p.name)
            if field not in model.model_fields or field == "data_dir" or (name, field) == ("select", "out"):  # (shared options)
                continue
            desc = model.model_fields[field].description
            assert desc and desc.rstrip(".") in p.help and f"[config: {field}" in p.help, (name, field, p.help)
            assert "--" + field.replace("_", "-") in p.opts, (name, field, p.opts)
            n += 1
        assert n >= least, (name, n)
        checked += n
    assert checked >= 70
