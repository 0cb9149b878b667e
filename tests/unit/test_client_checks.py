"""What the client refuses before sending anything (exit status 2), and how its status table
says that nodes do not agree (nodesvc/client.py)."""

from __future__ import annotations

from pathlib import Path

from nodesvc.client import check_upload, format_status, healthy, main
from nodesvc.config import Peer


def _config(tmp_path: Path) -> Path:
    # Ports nothing listens on: a check that lets an upload through would fail differently
    # (after 20 s of retries, exit status 1), not with 2.
    path = tmp_path / "config.json"
    path.write_text('{"peers": [{"id": 1, "address": "127.0.0.1:9"}], '
                    '"max_image_bytes": 1024}')
    return path


def test_a_bad_upload_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    ok, empty, big = tmp_path / "ok.png", tmp_path / "empty.png", tmp_path / "big.png"
    ok.write_bytes(b"x")
    empty.write_bytes(b"")
    big.write_bytes(b"x" * 1025)
    assert check_upload(ok, "ok.png", 1024, named=False) is None
    assert "empty file" in (check_upload(empty, "empty.png", 1024, named=False) or "")
    assert "over the cluster's max_image_bytes (1024)" in (
        check_upload(big, "big.png", 1024, named=False) or "")
    assert "not a valid image name" in (check_upload(ok, "", 1024, named=True) or "")
    assert "No such file" in (check_upload(tmp_path / "nope.png", "nope.png", 1024,
                                           named=False) or "")
    assert "Is a directory" in (check_upload(tmp_path, "d.png", 1024, named=False) or "")


def test_the_client_exits_2_for_an_empty_name_or_file_and_sends_nothing(
        tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    ok, empty = tmp_path / "ok.png", tmp_path / "empty.png"
    ok.write_bytes(b"x")
    empty.write_bytes(b"")
    assert main(["--config", str(cfg), "upload", str(ok), "--name", ""]) == 2
    # The bad second file stops the run before the first one is sent.
    assert main(["--config", str(cfg), "upload", str(ok), str(empty)]) == 2


def test_the_status_table_says_which_node_names_which_leader() -> None:
    peers = {1: Peer(1, "10.0.0.1", 7001), 2: Peer(2, "10.0.0.2", 7002)}
    split = format_status(peers, {1: {"leader": 2, "role": "follower"},
                                  2: {"leader": None, "role": "candidate"}})
    assert "Leader: NOT AGREED (node 1: 2, node 2: none)" in split
    nobody = format_status(peers, {1: "unreachable (refused)", 2: "unreachable (refused)"})
    assert "Leader: unknown (no node answered)" in nobody


def test_a_leader_the_clients_config_does_not_list_is_flagged() -> None:
    peers = {1: Peer(1, "10.0.0.1", 7001), 2: Peer(2, "10.0.0.2", 7002)}
    infos: dict[int, dict[str, object] | str] = {
        1: {"leader": 3, "role": "follower", "config_hash": "h"},
        2: {"leader": 3, "role": "follower", "config_hash": "h"}}
    table = format_status(peers, infos)
    assert "node 1 follows node 3, which this client's config.json does not list" in table
    assert not healthy(infos)
    infos[1]["leader"] = infos[2]["leader"] = 2  # type: ignore[index]
    assert healthy(infos) and "does not list" not in format_status(peers, infos)
