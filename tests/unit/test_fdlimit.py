"""The node's open-file limit against max_connections (the pure decision)."""

from __future__ import annotations

import resource

from nodesvc import fdlimit

INF = resource.RLIM_INFINITY


def test_a_high_enough_soft_limit_is_left_alone() -> None:
    assert fdlimit.plan(65536, 65536, fdlimit.needed(1024)) == (None, None)
    assert fdlimit.plan(INF, INF, fdlimit.needed(1024)) == (None, None)


def test_systemds_default_soft_limit_is_raised_to_what_is_needed() -> None:
    want = fdlimit.needed(1024)
    assert want > 1024  # the default max_connections alone would use up 1024
    assert fdlimit.plan(1024, 524288, want) == (want, None)
    assert fdlimit.plan(1024, INF, want) == (want, None)


def test_a_hard_limit_below_the_need_raises_to_it_and_warns() -> None:
    new, warning = fdlimit.plan(256, 1024, fdlimit.needed(1024))
    assert new == 1024
    assert warning is not None and "max_connections" in warning
    new, warning = fdlimit.plan(1024, 1024, fdlimit.needed(1024))
    assert new is None and warning is not None
