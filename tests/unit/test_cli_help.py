"""Every ``smartpay`` subcommand explains itself: ``--help`` works and every option says what it does."""

import argparse

import pytest

from smartpay_tools import cli


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_top_level_help_lists_every_command(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "Exit codes" in out
    for name in _subcommands():
        assert f"\n    {name}" in out


def test_help_leads_with_the_main_job_the_local_stack_and_paying_a_cycle() -> None:
    assert list(_subcommands())[:3] == ["demo", "serve", "cycle"]


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_subcommand_help_is_meaningful(name: str, capsys) -> None:
    sub = _subcommands()[name]
    assert sub.description and len(sub.description) > 20, f"{name} has no description"
    undocumented = [a.dest for a in sub._actions if not isinstance(a, argparse._HelpAction) and not a.help]
    assert undocumented == [], f"{name}: options without help: {undocumented}"
    with pytest.raises(SystemExit) as exit_:
        cli.main([name, "--help"])
    assert exit_.value.code == 0 and sub.description.split(".")[0] in " ".join(capsys.readouterr().out.split())
