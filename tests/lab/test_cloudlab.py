"""The lab's pure parts: address plan, inventory text, apt sources parsing."""

from __future__ import annotations

import pytest

from cloudlab import image, inventory, plan


def test_hosts_get_distinct_addresses_in_the_lab_subnet() -> None:
    hosts = plan.hosts(5)
    addresses = [h.address for h in hosts]
    assert addresses == ["10.213.0.11", "10.213.0.12", "10.213.0.13", "10.213.0.14",
                         "10.213.0.15"]
    assert plan.gateway() not in addresses
    assert len({h.netns for h in hosts}) == len({h.veth for h in hosts}) == 5
    assert all(len(h.veth) <= 15 for h in hosts)  # Linux interface names


@pytest.mark.parametrize("count", [0, plan.MAX_HOSTS + 1])
def test_host_count_is_bounded(count: int) -> None:
    with pytest.raises(ValueError, match="1 to"):
        plan.hosts(count)


def test_inventory_lists_nodes_with_ids_and_a_local_client(tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = inventory.render(plan.hosts(3), tmp_path / "key", "/venv/bin/python")
    assert "h3 ansible_host=10.213.0.13 node_id=3" in text
    assert "localhost ansible_connection=local ansible_python_interpreter=/venv/bin/python" \
        in text
    assert f"ansible_ssh_private_key_file={tmp_path / 'key'}" in text
    lines = text.splitlines()
    assert lines.index("[nodes]") < lines.index("[lab:vars]") < lines.index("[client]")


def test_client_hosts_are_listed_apart_from_the_nodes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    lines = inventory.render(plan.hosts(4), tmp_path / "key", "/py", spare=1).splitlines()
    nodes = lines[lines.index("[nodes]") + 1:lines.index("[lab_clients]")]
    assert [line.split()[0] for line in nodes if line] == ["h1", "h2", "h3"]
    assert lines[lines.index("[lab_clients]") + 1] == "h4 ansible_host=10.213.0.14"
    assert inventory.layout("\n".join(lines)) == (3, 1)
    assert inventory.layout(inventory.render(plan.hosts(3), tmp_path / "k", "/py")) == (3, 0)


def test_mirror_from_one_line_sources() -> None:
    text = ("# comment\ndeb http://mirror.example/debian-security bookworm-security main\n"
            "deb [arch=amd64] http://mirror.example/debian bookworm main\n")
    assert image.mirror_from_sources([text]) == "http://mirror.example/debian"


def test_mirror_from_deb822_sources() -> None:
    text = ("Types: deb\nURIs: http://m.example/debian\nSuites: bookworm bookworm-updates\n"
            "Components: main\n\nTypes: deb\nURIs: http://m.example/debian-security\n"
            "Suites: bookworm-security\n")
    assert image.mirror_from_sources([text]) == "http://m.example/debian"


def test_no_bookworm_source_means_none() -> None:
    assert image.mirror_from_sources(["deb http://m.example/debian trixie main\n"]) is None


def test_cache_key_follows_the_package_list(monkeypatch: pytest.MonkeyPatch) -> None:
    before = image.cache_key()
    monkeypatch.setattr(image, "PACKAGES", [*image.PACKAGES, "curl"])
    assert image.cache_key() != before


@pytest.mark.parametrize("command", [["up"], ["down"], ["status"], ["ssh", "1"], ["stop", "1"],
                                     ["start", "1"]])
def test_only_root_may_run_the_lab(command: list[str], monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    from cloudlab import cli

    monkeypatch.setattr(cli.os, "geteuid", lambda: 1000)
    assert cli.main(command) == 2
    assert "needs root" in capsys.readouterr().err
