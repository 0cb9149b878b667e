"""bench.compare's ratios: each cloud-p2p row is compared with the peer's row measured next
to it, not with a peer measured at another time."""

from __future__ import annotations

from typing import Any

from bench.compare import PEER_SYSTEM, add_ratios, durable_rate


def row(system: str, rps: float, paired_with: str | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {"system": system, "size": "64KiB", "clients": 64, "generator": "wrk",
                         "rps": rps}
    if paired_with is not None:
        r["paired_with"] = paired_with
    return r


def test_each_system_is_compared_with_the_peer_measured_beside_it() -> None:
    rows = [row("cloud-p2p fsync", 2000), row(PEER_SYSTEM, 4000, "cloud-p2p fsync"),
            row("cloud-p2p no-fsync", 2100), row(PEER_SYSTEM, 3000, "cloud-p2p no-fsync")]
    add_ratios(rows, None)
    assert [r["ratio_to_peer"] for r in rows] == [0.5, 1.0, 0.7, 1.0]


def test_an_unpaired_peer_row_serves_every_system() -> None:
    rows = [row("cloud-p2p fsync", 1000), row(PEER_SYSTEM, 4000),
            row("cloud-p2p no-fsync", 3000)]
    add_ratios(rows, None)
    assert [r["ratio_to_peer"] for r in rows] == [0.25, 1.0, 0.75]


def test_limits_are_the_disk_for_fsync_and_tcp_for_the_rest() -> None:
    limits = {"tcp_mib_s": 1024.0, "durable_by_size": {"65536": {"8": 500.0, "64": 800.0}}}
    rows = [row("cloud-p2p fsync", 400), row(PEER_SYSTEM, 4000, "cloud-p2p fsync")]
    add_ratios(rows, limits)
    assert rows[0]["limit_rps"] == 800.0 and rows[0]["ratio_to_limit"] == 0.5
    assert rows[1]["limit_rps"] == 16384.0


def test_the_durable_rate_counts_the_write_back_left_behind() -> None:
    assert durable_rate(ok=1000, rps=500.0, writeback_s=0.0) == 500.0  # already on disk
    assert durable_rate(ok=1000, rps=500.0, writeback_s=2.0) == 250.0  # 2 s + 2 s
    assert durable_rate(ok=0, rps=0.0, writeback_s=1.0) == 0.0


def test_durable_rates_are_compared_with_the_peer_beside_them() -> None:
    ours = row("cloud-p2p fsync", 300) | {"durable_rps": 300.0}
    peer = row(PEER_SYSTEM, 450, "cloud-p2p fsync") | {"durable_rps": 200.0}
    old = row("cloud-p2p no-fsync", 400)  # a report from before the write-back was timed
    rows = [ours, peer, old, row(PEER_SYSTEM, 500, "cloud-p2p no-fsync")]
    add_ratios(rows, None)
    assert ours["ratio_to_peer"] == 0.67 and ours["durable_ratio_to_peer"] == 1.5
    assert peer["durable_ratio_to_peer"] == 1.0
    assert "durable_ratio_to_peer" not in old


def test_the_cpu_split_adds_up_to_the_machine_and_counts_only_the_measured_servers() -> None:
    from bench.cpu import CLOUD_P2P, CpuUse
    from bench.split import JOURNALD, PEER_PROCESSES, split

    use = CpuUse({1: (CLOUD_P2P, 0.4, 0.6), 2: (CLOUD_P2P, 0.2, 0.2),
                  3: ("haproxy", 0.1, 0.1), 4: (JOURNALD, 0.05, 0.05)}, machine=3.0)
    ours = split(use, 1000, (CLOUD_P2P,))
    assert ours == {"user": 0.6, "kernel": 0.8, "journald": 0.1, "rest": 1.5,
                    "machine": 3.0}
    peer = split(use, 1000, PEER_PROCESSES)  # an idle cloud-p2p counts as the rest
    assert (peer["user"], peer["kernel"], peer["rest"]) == (0.1, 0.1, 2.7)


def test_the_gap_is_taken_part_by_part_against_the_peer() -> None:
    from bench.split import gap

    ours = {"rps": 1500.0, "cpu_ms": {"user": 0.4, "kernel": 0.5, "journald": 0.06,
                                      "rest": 0.2, "machine": 1.16}}
    peer = {"rps": 3000.0, "cpu_ms": {"user": 0.05, "kernel": 0.45, "journald": 0.0,
                                      "rest": 0.1, "machine": 0.6}}
    d = gap(ours, peer)
    assert d == {"user": 0.35, "kernel": 0.05, "journald": 0.06, "rest": 0.1,
                 "machine": 0.56, "ratio_to_peer": 0.5}


def test_a_cell_given_twice_is_compared_with_its_own_peer_cell() -> None:
    from bench.split import PEER_SYSTEM, add_gaps

    def row(system: str, rps: float, paired: str | None = None) -> dict[str, object]:
        r: dict[str, object] = {"system": system, "size": "64KiB", "clients": 10, "rps": rps,
                                "cpu_ms": dict.fromkeys(("user", "kernel", "journald", "rest",
                                                         "machine"), 1.0)}
        if paired:
            r["paired_with"] = paired
        return r

    ours = "cloud-p2p fsync"
    rows = [row(ours, 1800), row(PEER_SYSTEM, 4500, ours),
            row(ours, 1850), row(PEER_SYSTEM, 3700, ours)]
    add_gaps(rows)
    assert [r["gap"]["ratio_to_peer"] for r in rows if "gap" in r] == [0.4, 0.5]
    assert "gap" not in rows[1] and "gap" not in rows[3]


def test_compare_runs_a_client_count_given_twice_once() -> None:
    from bench.compare import parse_args

    assert parse_args(["--clients", "10,64,10"]).clients == [10, 64]
