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
