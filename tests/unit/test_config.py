"""config.json and the environment: every mistake gets one precise message."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodesvc.config import ConfigError, load_settings, parse_config

SEED = b"""{
  "peers": [
    {"id": 3, "address": "192.0.2.3:7003"},
    {"id": 1, "address": "192.0.2.1:7001"},
    {"id": 2, "address": "192.0.2.2:7002"}
  ],
  "shared_dir": "./shared_images"
}"""


def test_the_seed_config_parses_with_defaults_and_sorted_peers() -> None:
    c = parse_config(SEED)
    assert [p.id for p in c.peers] == [1, 2, 3]
    assert c.peer(2).address == "192.0.2.2:7002"
    assert c.max_image_bytes == 32 * 1024 * 1024 and c.heartbeat_ms == 150
    assert len(c.hash) == 16


@pytest.mark.parametrize(("raw", "message"), [
    (b'{"peers": [\n  {"id": 1, "address": "a:1"}\n  {"id": 2}\n]}',
     "invalid JSON at line 3, column 3"),
    ('{"peers": [\n  {"id": 1, "address": "é:1"} x]}'.encode(),  # column in characters
     "invalid JSON at line 2, column 31"),
    (b'{"peers": [\n  {"id": 1, "address": "\xe9:1"}]}', "byte 0xe9 at line 2, column 25"),
    (b"[1, 2]", "top level must be a JSON object"),
    (b'{"peers": []}', '"peers" must be a non-empty list'),
    (b'{"shared_dir": "x"}', '"peers" must be a non-empty list'),
    (b'{"peers": [{"id": 1, "address": "a:1"}, {"id": 1, "address": "b:2"}]}',
     "peers[1]: duplicate id 1"),
    (b'{"peers": [{"id": 1, "address": "a:1"}, {"id": 2, "address": "a:1"}]}',
     "duplicate address a:1"),
    (b'{"peers": [{"id": 1, "address": "a"}]}', 'address must be "host:port"'),
    (b'{"peers": [{"id": 1, "address": "a:0"}]}', "no valid port"),
    (b'{"peers": [{"id": 1, "address": "a:70000"}]}', "no valid port"),
    ('{"peers": [{"id": 1, "address": "a:\u00b9"}]}'.encode(), "no valid port"),
    ('{"peers": [{"id": 1, "address": "a:\u0661"}]}'.encode(), "no valid port"),
    (b'{"peers": [{"id": 1, "address": ":7001"}]}', "has no host"),
    (b'{"peers": [{"id": 1, "address": "a b:7001"}]}', "invalid host"),
    (b'{"peers": [{"id": true, "address": "a:1"}]}', "id must be a non-negative integer"),
    (b'{"peers": [{"id": 1, "address": "a:1", "x": 1}]}', 'exactly "id" and "address"'),
    (b'{"peers": [{"id": 1, "address": "a:1"}], "shared_dirs": "x"}',
     "unknown key(s) shared_dirs"),
    (b'{"peers": [{"id": 1, "address": "a:1"}], "heartbeat_ms": 0}',
     "heartbeat_ms must be a positive integer"),
    (b'{"peers": [{"id": 1, "address": "a:1"}], "heartbeat_ms": true}',
     "heartbeat_ms must be a positive integer, got true"),
    (b'{"peers": [{"id": 1, "address": "a:1"}], "heartbeat_ms": "150"}',
     'heartbeat_ms must be a positive integer, got "150"'),
    (b'{"peers": [{"id": 1, "address": "a:1"}], "leader_timeout_ms": 100}',
     "leader_timeout_ms must be larger than heartbeat_ms"),
])
def test_bad_configs_are_named_precisely(raw: bytes, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(raw, "c.json")
    assert message in str(err.value)
    assert str(err.value).startswith("c.json")


def test_ipv6_addresses_in_brackets_are_fine() -> None:
    c = parse_config(b'{"peers": [{"id": 1, "address": "[::1]:7001"}]}')
    assert (c.peers[0].host, c.peers[0].port) == ("::1", 7001)


def test_the_hash_follows_meaning_not_formatting() -> None:
    a = parse_config(SEED)
    b = parse_config(b'{"shared_dir":"./shared_images","peers":[{"address":"192.0.2.1:7001",'
                     b'"id":1},{"id":2,"address":"192.0.2.2:7002"},'
                     b'{"id":3,"address":"192.0.2.3:7003"}]}')
    c = parse_config(SEED.replace(b"7003", b"7004"))
    assert a.hash == b.hash != c.hash


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    cfg = tmp_path / "config.json"
    cfg.write_bytes(SEED)
    return {"CONFIG_FILE": str(cfg), "NODE_ID": "2", "SHARED_DIR": str(tmp_path / "s"),
            **extra}


def test_settings_from_the_environment(tmp_path: Path) -> None:
    s = load_settings(env_for(tmp_path))
    assert (s.node_id, s.bind_host, s.bind_port) == (2, "192.0.2.2", 7002)
    assert s.shared_dir == tmp_path / "s" and s.shared_dir.is_dir()
    s = load_settings(env_for(tmp_path, BIND="127.0.0.1:9000"))
    assert (s.bind_host, s.bind_port) == ("127.0.0.1", 9000)


@pytest.mark.parametrize(("extra", "message"), [
    ({"NODE_ID": ""}, "NODE_ID is not set"),
    ({"NODE_ID": "two"}, "NODE_ID must be a non-negative integer"),
    ({"NODE_ID": "\u00b2"}, "NODE_ID must be a non-negative integer"),
    ({"NODE_ID": "\uff12"}, "NODE_ID must be a non-negative integer"),
    ({"BIND": "127.0.0.1:\u00b2"}, "BIND: address .* has no valid port"),
    ({"SHARED_DIR": "a\x00b"}, "not a usable shared dir"),
    ({"NODE_ID": "9"}, "NODE_ID=9 is not in"),
    ({"BIND": "nonsense"}, 'BIND: address must be "host:port"'),
    ({"CONFIG_FILE": "/nonexistent/config.json"}, "config file not found"),
])
def test_bad_environments_are_named(tmp_path: Path, extra: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_settings(env_for(tmp_path, **extra))


def test_an_unusable_shared_dir_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="cannot create shared dir"):
        load_settings(env_for(tmp_path, SHARED_DIR=str(blocker / "images")))


def test_durability_is_fsync_unless_turned_off_explicitly() -> None:
    assert parse_config(SEED).durability == "fsync"
    off = parse_config(SEED.replace(b'"shared_dir"', b'"durability": "none", "shared_dir"'))
    assert off.durability == "none" and off.hash != parse_config(SEED).hash
    with pytest.raises(ConfigError, match='"durability" must be one of fsync, none'):
        parse_config(SEED.replace(b'"shared_dir"', b'"durability": "fast", "shared_dir"'))


@pytest.mark.parametrize(("var", "what"), [("CLUSTER_SECRET_FILE", "the cluster secret"),
                                           ("CLIENT_TOKEN_FILE", "the client token")])
def test_a_secret_file_others_can_read_is_refused_by_its_own_name(
        tmp_path: Path, var: str, what: str) -> None:
    secret = tmp_path / "secret"
    secret.write_text("x" * 40)
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match=f"{var}=.*: {what} must not be readable by others"):
        load_settings(env_for(tmp_path, **{var: str(secret)}))


def test_a_client_token_that_cannot_go_in_a_header_is_refused(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_bytes(b"abc def0123456789abcdef0123456789")
    token.chmod(0o600)
    with pytest.raises(ConfigError, match=r"CLIENT_TOKEN_FILE=.*visible ASCII"):
        load_settings(env_for(tmp_path, CLIENT_TOKEN_FILE=str(token)))


def test_max_connections_leaves_room_for_clients() -> None:
    """Each peer may keep max_connections / nodes connections to a node: with too few
    slots the peers' own connections took them all and clients were locked out."""
    three = SEED.replace(b'"shared_dir"', b'"max_connections": 47, "shared_dir"')
    with pytest.raises(ConfigError, match="max_connections must be at least 48 for 3 nodes"):
        parse_config(three)
    assert parse_config(three.replace(b": 47", b": 48")).max_connections == 48
