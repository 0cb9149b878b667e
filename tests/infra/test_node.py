"""One test per promise of the deployment, on every node."""

from __future__ import annotations

import hashlib

from conftest import CONFIG

from nodesvc.indexcopy import DIRECTORY, FILENAME, IndexFile


def test_service_is_active_and_enabled(host) -> None:  # type: ignore[no-untyped-def]
    svc = host.service("cloud-p2p")
    assert svc.is_running
    assert svc.is_enabled


def test_service_runs_as_its_own_non_root_user(host, service_user) -> None:  # type: ignore[no-untyped-def]
    assert service_user not in ("", "root")
    pid = host.check_output("systemctl show cloud-p2p -p MainPID --value")
    assert pid.isdigit() and int(pid) > 0
    user = host.check_output(f"ps -o user= -p {pid}").strip()
    assert user == service_user
    assert host.user(service_user).shell in ("/usr/sbin/nologin", "/bin/false")


def test_systemd_knows_it_is_ready_with_a_status(host) -> None:  # type: ignore[no-untyped-def]
    # Type=notify: "active" means READY=1 arrived; STATUS= carries the role.
    status = host.check_output("systemctl show cloud-p2p -p StatusText --value")
    assert "images stored" in status and ("leader" in status or "follower" in status)


def test_node_listens_on_its_port(host, cluster_config, node_id) -> None:  # type: ignore[no-untyped-def]
    me = next(p for p in cluster_config["peers"] if p["id"] == node_id)
    address, port = me["address"].rsplit(":", 1)
    assert host.socket(f"tcp://{address}:{port}").is_listening


def test_config_is_identical_on_every_host(host, all_hosts) -> None:  # type: ignore[no-untyped-def]
    digests = {h.backend.hostname: h.file(CONFIG).sha256sum for h in all_hosts}
    assert len(set(digests.values())) == 1, digests
    assert host.file(CONFIG).user == "root"
    assert host.file(CONFIG).mode == 0o640


def test_images_directory_belongs_to_the_service(host, shared_dir, service_user) -> None:  # type: ignore[no-untyped-def]
    d = host.file(shared_dir)
    assert d.is_directory and d.user == service_user and d.mode == 0o750


def test_firewall_denies_by_default_and_allows_exactly_ssh_and_the_cluster(
        host, cluster_config, ssh_port) -> None:  # type: ignore[no-untyped-def]
    out = host.check_output("ufw status verbose")
    assert "Status: active" in out
    assert "deny (incoming)" in out
    allowed = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1] == "ALLOW" and "(v6)" not in line:
            allowed.add(parts[0])
    ports = {p["address"].rsplit(":", 1)[1] for p in cluster_config["peers"]}
    assert allowed == {f"{ssh_port}/tcp", *(f"{p}/tcp" for p in ports)}


def test_stored_files_match_the_last_stress_report(host, node_id, report, shared_dir) -> None:  # type: ignore[no-untyped-def]
    expected = {u["name"]: u["sha256"] for u in report["uploads"] if u["node"] == node_id}
    prefix = f"stress-{report['run_id']}-"
    listing = host.check_output(
        f"cd {shared_dir} && find . -maxdepth 1 -name '{prefix}*' -printf '%f\\n' | sort")
    names = [n for n in listing.splitlines() if n]
    assert sorted(names) == sorted(expected), f"node {node_id}: files differ from the report"
    sums = host.check_output(f"cd {shared_dir} && sha256sum {prefix}*") if names else ""
    actual = {line.split()[1]: line.split()[0] for line in sums.splitlines()}
    assert actual == expected
    assert all(len(h) == len(hashlib.sha256().hexdigest()) for h in actual.values())


def test_every_node_keeps_the_whole_index_on_disk(host, shared_dir, service_user, report,  # type: ignore[no-untyped-def]
                                                 cluster_config, tmp_path) -> None:
    """Each node's index (nodesvc/indexcopy.py) names the node of every upload of the last
    stress run, its own and the others': what a leader starts from after a restart."""
    f = host.file(f"{shared_dir}/{DIRECTORY}/{FILENAME}")
    assert f.exists and f.user == service_user and f.mode == 0o640
    copy = IndexFile(tmp_path)  # the product's own reader, on the host's bytes
    copy.directory.mkdir()
    copy.path.write_bytes(f.content)
    nodes = {p["id"] for p in cluster_config["peers"]}
    index, problem, _ = copy.load(nodes)
    assert problem is None
    expected = {u["name"]: u["node"] for u in report["uploads"] if u["node"] in nodes}
    assert expected and {name: index.get(name) for name in expected} == expected


def test_cluster_secret_is_readable_only_by_the_service(host, service_user) -> None:  # type: ignore[no-untyped-def]
    f = host.file("/etc/cloud-p2p/cluster.secret")
    assert f.user == "root" and f.group == service_user and f.mode == 0o640
    assert len(f.content_string.strip()) >= 32
    env = host.check_output("systemctl show cloud-p2p -p Environment --value")
    assert "CLUSTER_SECRET_FILE=/etc/cloud-p2p/cluster.secret" in env
    log = host.check_output("journalctl -u cloud-p2p --no-pager -n 2000")
    assert "peer authentication is OFF" not in log


def test_uploads_need_no_client_token_unless_the_deploy_asks_for_one(host) -> None:  # type: ignore[no-untyped-def]
    """The default deploy (cloud_p2p_client_token false) leaves no token behind, on disk or
    in the unit; tests/lab/test_deploy.py turns one on and off again."""
    assert not host.file("/etc/cloud-p2p/client.token").exists
    env = host.check_output("systemctl show cloud-p2p -p Environment --value")
    assert "CLIENT_TOKEN_FILE" not in env


def test_service_may_open_a_file_per_connection(host, cluster_config) -> None:  # type: ignore[no-untyped-def]
    pid = host.check_output("systemctl show cloud-p2p -p MainPID --value")
    limits = host.check_output(f"cat /proc/{pid}/limits")
    line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
    soft = line.split()[3]
    needed = 2 * cluster_config.get("max_connections", 1024) + 256  # nodesvc/fdlimit.py
    assert soft == "unlimited" or int(soft) >= needed


def test_unit_is_hardened(host) -> None:  # type: ignore[no-untyped-def]
    props = host.check_output(
        "systemctl show cloud-p2p -p ProtectSystem -p NoNewPrivileges -p PrivateTmp "
        "-p RestrictAddressFamilies -p CapabilityBoundingSet")
    assert "ProtectSystem=strict" in props and "NoNewPrivileges=yes" in props
    families = props.split("RestrictAddressFamilies=", 1)[1].split("\n", 1)[0].split()
    assert sorted(families) == ["AF_INET", "AF_INET6", "AF_UNIX"]
    out = host.check_output("systemd-analyze security cloud-p2p --no-pager")
    exposure = float(out.rsplit("Overall exposure level for cloud-p2p.service:", 1)[1].split()[0])
    assert exposure <= 2.0, out[-500:]


def test_systemd_restarts_the_node_without_ever_giving_up(host) -> None:  # type: ignore[no-untyped-def]
    props = host.check_output(
        "systemctl show cloud-p2p -p Restart -p RestartUSec -p StartLimitIntervalUSec")
    assert "Restart=on-failure" in props and "RestartUSec=1s" in props
    assert "StartLimitIntervalUSec=0" in props, props  # a port taken for a while is survived
