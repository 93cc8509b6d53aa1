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
