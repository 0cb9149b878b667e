"""The node's command line: settings come from the environment, and anything else on the
command line is a mistake that stops it with exit status 2 (nodesvc/__main__.py)."""

from __future__ import annotations

import pytest

from nodesvc.__main__ import main


def test_an_unknown_flag_stops_the_node_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--bogus-flag"])
    assert stop.value.code == 2
    assert "unrecognized arguments: --bogus-flag" in capsys.readouterr().err


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.startswith("cloud-p2p ")
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    for var in ("NODE_ID", "CONFIG_FILE", "SHARED_DIR", "BIND", "CLUSTER_SECRET_FILE",
                "CLIENT_TOKEN_FILE", "CLOUD_P2P_EVENT_LOOP"):
        assert var in help_text


def test_an_unknown_event_loop_is_refused(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CLOUD_P2P_EVENT_LOOP", "bogus")
    assert main([]) == 2
    assert "CLOUD_P2P_EVENT_LOOP must be one of uvloop, asyncio, not 'bogus'" \
        in capsys.readouterr().err
