"""The help of `consumer run` shows each flag's default as consumer/settings.py has it: the
defaults are written once, there, never typed into a help text."""

from __future__ import annotations

import argparse

from consumer import cli
from consumer.cli.common import default
from consumer.cli.run import run_overrides


def _run_parser() -> argparse.ArgumentParser:
    commands = next(
        action
        for action in cli.build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    run: argparse.ArgumentParser = commands.choices["run"]
    return run


def test_every_setting_flag_of_run_shows_the_settings_default() -> None:
    parser = _run_parser()
    by_dest = {action.dest: action for action in parser._actions if action.option_strings}
    namespace = argparse.Namespace(**{dest: dest for dest in by_dest})
    checked = 0
    for section, values in run_overrides(namespace).items():
        for name, dest in values.items():
            value = default(section, name)
            assert f"(default {value}" in (by_dest[dest].help or ""), (section, name)
            checked += 1
    assert checked == 8
