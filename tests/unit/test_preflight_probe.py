"""The preflight section in the probe: last in every host's script (it reads the services'
guards), and the operator's clock at send and arrival put beside the host's."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hactl.facts.preflight import Preflight
from hactl.probe import facts_for, probe_host, read_host_facts
from hactl.spec.load import load_file
from hactl.spec.models import Cluster
from hactl.transport.fake import FakeTransport
from tests.unit.test_probe import answer, ok

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lab() -> Cluster:
    return load_file(str(REPO / "specs" / "lab.yaml")).cluster


def test_the_section_is_last_on_every_host(lab: Cluster) -> None:
    for host in lab.all_hosts():
        facts = facts_for(lab, host)
        assert isinstance(facts[-1], Preflight) and facts[-1].section == "preflight"
        assert [f.section for f in facts].index("services") < len(facts) - 1


def test_read_host_facts_keeps_the_operators_clock(lab: Cluster) -> None:
    host = lab.host("worker01")
    sections = {"system": ok("hostname=worker01\n"), "preflight": ok("now=1000.25\nswap=/swap.img\n")}
    hf = read_host_facts(lab, host, sections, clock=(1000.0, 1000.5))
    assert hf.preflight is not None and hf.preflight.swap == ("/swap.img",)
    assert (hf.preflight.sent_at, hf.preflight.received_at) == (1000.0, 1000.5)
    assert hf.preflight.clock_skew == 0.0
    assert "preflight" not in hf.section_errors


def test_the_probe_measures_the_round_trip_around_the_host_clock(lab: Cluster) -> None:
    host = lab.host("lb01")
    fake = FakeTransport("lb01", strict=True).on(
        lambda wire: "__hactl_run" in wire,
        respond=answer({"system": ok("hostname=lb01\n"), "preflight": ok("now=5.0\n")}))
    hf = asyncio.run(probe_host(fake, lab, host))
    pf = hf.preflight
    assert pf is not None and pf.sent_at is not None and pf.received_at is not None
    assert pf.sent_at <= pf.received_at
    assert pf.clock_skew is not None and pf.clock_skew > 1e9  # the host says 1970
