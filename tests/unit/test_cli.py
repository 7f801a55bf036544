import pytest

from modelwarden.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: modelwarden " + command in capsys.readouterr().out


def test_run_config_from_flags():
    import argparse

    from modelwarden.commands.run import build_config, configure

    parser = argparse.ArgumentParser()
    configure(parser)
    config = build_config(parser.parse_args(["-n", "ml", "-n", "ml-*", "--peering", "mw", "--liveness", "off"]))
    assert config.namespaces == ("ml", "ml-*") and not config.clusterwide
    assert config.peering_name == "mw" and not config.standalone
    assert config.liveness_endpoint is None
    everything = build_config(parser.parse_args(["-A"]))
    assert everything.clusterwide and everything.standalone


def test_run_selector_and_workers_from_flags_and_what_a_selector_owns():
    import argparse

    from modelwarden.commands.run import build_config, configure

    parser = argparse.ArgumentParser()
    configure(parser)
    config = build_config(parser.parse_args(["--selector", "shard=a,team", "--policy-workers", "2", "--shard", "1/2"]))
    assert config.selector == {"shard": "a", "team": None} and config.policy_workers == 2 and config.shard == (1, 2)
    plain = build_config(parser.parse_args([]))
    assert plain.selector == {} and plain.owns("any-uid", {}) and plain.policy_tick == 30.0
    unsharded = build_config(parser.parse_args(["--selector", "shard=a,team"]))
    assert unsharded.owns("u", {"shard": "a", "team": "x"})
    assert not unsharded.owns("u", {"shard": "a"}) and not unsharded.owns("u", {"shard": "b", "team": "x"})
    with pytest.raises(SystemExit):
        parser.parse_args(["--selector", "bad key=1"])
