"""Topology from fake /sys and /proc trees (a two-socket SMT box) and from this machine."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from screening_helpers import FAKE_SMT

from corecensus.cpulist import CpuListError
from corecensus.errors import ScreeningError
from corecensus.screening import parse_cpu_list, read_topology
from corecensus.screening.topology import format_cpu_list


def test_two_socket_smt_box() -> None:
    topo = read_topology(FAKE_SMT / "sys", FAKE_SMT / "proc")
    assert [c.cpu for c in topo.cpus] == list(range(8))
    assert topo.online == (0, 1, 2, 3, 4, 5, 6)
    c0, c4, c2, c7 = topo.get(0), topo.get(4), topo.get(2), topo.get(7)
    assert (c0.package_id, c0.core_id, c0.thread_siblings) == (0, 0, (4,))
    assert (c4.package_id, c4.core_id, c4.thread_siblings) == (0, 0, (0,))
    assert (c2.package_id, c2.core_id, c2.thread_siblings) == (1, 0, (6,))
    assert c0.vendor == "GenuineIntel" and (c0.family, c0.model, c0.stepping) == (6, 106, 6)
    assert c0.microcode == "0xd0003a5" and c2.microcode == "0xd0003b9"
    assert c0.model_key == c2.model_key == "GenuineIntel:6:106:6"
    assert "avx512f" in c0.flags
    assert not c7.online and c7.model is None  # offline: absent from /proc/cpuinfo


def test_partner_is_same_model_and_not_an_smt_sibling() -> None:
    topo = read_topology(FAKE_SMT / "sys", FAKE_SMT / "proc")
    online = topo.online
    assert topo.partner(0, online) == 1
    assert topo.partner(3, online) == 4  # 3's sibling is 7 (offline)
    assert topo.partner(2, (2, 6, 3)) == 3  # skips 6, the SMT sibling of 2
    assert topo.partner(6, online) == 0
    # 0 and 4 share a core: with only them, the sibling is the last resort.
    assert topo.partner(0, (0, 4)) == 4
    assert topo.partner(0, (0, 4, 5)) == 5
    assert topo.partner(0, (0,)) is None


def test_select_rejects_offline_and_unknown_cpus() -> None:
    topo = read_topology(FAKE_SMT / "sys", FAKE_SMT / "proc")
    assert topo.select(None) == topo.online
    assert topo.select([3, 1, 3]) == (1, 3)
    with pytest.raises(ScreeningError, match="CPU 7 is offline"):
        topo.select([7])
    with pytest.raises(ScreeningError, match="CPU 12 does not exist"):
        topo.select([12])


def test_unreadable_topology_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ScreeningError, match="is not a directory"):
        read_topology(tmp_path / "sys", tmp_path / "proc")
    (tmp_path / "sys" / "devices" / "system" / "cpu").mkdir(parents=True)
    with pytest.raises(ScreeningError, match="no CPUs listed"):
        read_topology(tmp_path / "sys", tmp_path / "proc")


def test_this_machine() -> None:
    topo = read_topology()
    assert set(os.sched_getaffinity(0)) <= set(topo.online)
    assert len(topo.cpus) >= (os.cpu_count() or 1)
    me = topo.get(0)
    assert me.model_key.count(":") == 3


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("0", (0,)), ("0-3,8", (0, 1, 2, 3, 8)), (" 2,1,2 ", (1, 2)), ("5-5", (5,))],
)
def test_parse_cpu_list(text: str, cpus: tuple[int, ...]) -> None:
    assert parse_cpu_list(text) == cpus
    assert parse_cpu_list(text, empty_ok=True) == cpus


def test_empty_cpu_list_only_where_allowed() -> None:
    """sysfs writes an empty list (``offline`` with every CPU online); a sidecar or --cpus that
    names no CPU is malformed. (Two parsers had disagreed: this one returned (), the other
    refused.)"""
    assert parse_cpu_list(" \n", empty_ok=True) == ()
    with pytest.raises(CpuListError, match="empty CPU list"):
        parse_cpu_list(" \n")


@pytest.mark.parametrize("text", ["a", "1-", "3-1", "1,,2", "-1", "1-99999999"])
def test_parse_cpu_list_rejects(text: str) -> None:
    with pytest.raises(CpuListError, match="bad CPU list"):
        parse_cpu_list(text)


def test_malformed_sysfs_list_is_a_screening_error(tmp_path: Path) -> None:
    """The topology reader says which sysfs file was malformed, as a ScreeningError (the
    screen could not run), not as the parser's metadata error."""
    shutil.copytree(FAKE_SMT, tmp_path / "tree")
    (tmp_path / "tree/sys/devices/system/cpu/online").write_text("0-3,x\n")
    with pytest.raises(ScreeningError, match=r"cpu/online: bad CPU list '0-3,x': 'x' is not N"):
        read_topology(tmp_path / "tree/sys", tmp_path / "tree/proc")


@given(st.sets(st.integers(min_value=0, max_value=4095), max_size=64))
def test_format_then_parse_round_trips(cpus: set[int]) -> None:
    assert parse_cpu_list(format_cpu_list(cpus), empty_ok=True) == tuple(sorted(cpus))
