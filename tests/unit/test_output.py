"""Plan output: text snapshots, symbols, colour only when asked, JSON against the schema,
Markdown, and no secrets anywhere. Refresh snapshots with HACTL_UPDATE_SNAPSHOTS=1."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import jsonschema
import pytest

from hactl.diff import Change, Diff, Op
from hactl.plan import output, planfile
from hactl.plan.graph import StepGraph
from hactl.plan.planner import Plan, build_plan
from hactl.plan.synthetic import PROBED_AT, Synthetic
from hactl.sensitive import Sensitive
from hactl.spec.load import load_file
from hactl.spec.models import Cluster
from hactl.vocabulary import Action, Address

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOTS = Path(__file__).parent / "snapshots"
SCHEMA = json.loads((ROOT / "docs" / "plan-format.schema.json").read_text())
SECRET_PATTERNS = [re.compile(p) for p in (
    r"BEGIN [A-Z ]*PRIVATE KEY", r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b", r"\b[0-9a-f]{64}\b(?!\")",
)]


@pytest.fixture(scope="module")
def lab() -> Cluster:
    return load_file(str(ROOT / "specs" / "lab.yaml")).cluster


def cases(lab: Cluster) -> dict[str, Plan]:
    def p(s: Synthetic) -> Plan:
        return build_plan(lab, s.observed(), now=PROBED_AT)

    return {
        "fresh": p(Synthetic(lab)),
        "first-master": p(Synthetic(lab).etcd().lb().init().join("worker02").unreachable("worker02")),
        "drift": p(Synthetic(lab).converged().lb(config=drifted(lab))),
        "converged": p(Synthetic(lab).converged()),
    }


def drifted(lab: Cluster) -> str:
    """The rendered haproxy.cfg with a hand edit (a too-short client timeout)."""
    from hactl.plan import desired

    text = desired.haproxy_cfg(lab)
    assert "timeout client 35s" in text
    return text.replace("timeout client 35s", "timeout client 5s")


def normalise(text: str) -> str:
    """Hashes depend on the spec file and the renderers' exact text: not on the output format."""
    text = re.sub(r"[0-9a-f]{64}", "<sha256>", text)
    return re.sub(r"spec sha256 [0-9a-f]{12}", "spec sha256 <hash>", text)


def check_snapshot(name: str, text: str) -> None:
    text = normalise(text)
    path = SNAPSHOTS / name
    if os.environ.get("HACTL_UPDATE_SNAPSHOTS") or not path.exists():
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; refresh with HACTL_UPDATE_SNAPSHOTS=1"


@pytest.mark.parametrize("case", ["fresh", "first-master", "drift", "converged"])
def test_text_snapshot(lab: Cluster, case: str) -> None:
    text = output.render_text(cases(lab)[case])
    check_snapshot(f"plan-{case}.txt", text)
    assert "\x1b[" not in text


@pytest.mark.parametrize("case", ["fresh", "drift"])
def test_markdown_snapshot(lab: Cluster, case: str) -> None:
    check_snapshot(f"plan-{case}.md", output.render_markdown(cases(lab)[case]))


def test_last_line_is_the_summary(lab: Cluster) -> None:
    plans = cases(lab)
    last = {k: output.render_text(v).rstrip("\n").splitlines()[-1] for k, v in plans.items()}
    assert last == {
        "fresh": "Plan: 14 to add, 0 to change, 0 to remove.",
        "first-master": "Plan: 4 to add, 1 to change, 0 to remove.",
        "drift": "Plan: 0 to add, 1 to change, 0 to remove.",
        "converged": "No changes. The cluster matches the spec.",
    }


def test_symbols_and_colour_only_when_asked(lab: Cluster) -> None:
    plan = cases(lab)["drift"]
    assert "  ~ lb[lb01].haproxy_cfg" in output.render_text(plan)
    coloured = output.render_text(plan, colour=True)
    assert "\x1b[33m" in coloured  # yellow for an in-place update
    replace = Change(Op.REPLACE, Address.parse("etcd.member[etcd03]"), {"id": "1"}, {"id": None}, "rebuilt", "etcd03")
    delete = Change(Op.DELETE, Address.parse("etcd.member[etcd04]"), {"id": "4"}, None, "extra")
    fake = Plan(lab, Diff((replace, delete)), StepGraph(), {})
    text = output.render_text(fake)
    assert "  -/+ etcd.member[etcd03]" in text and "  - etcd.member[etcd04]" in text
    assert text.rstrip().endswith("Plan: 1 to add, 0 to change, 2 to remove.")


def test_sensitive_values_print_as_the_mask(lab: Cluster) -> None:
    change = Change(Op.UPDATE, Address.parse("cluster.certificate-key"), {"key": Sensitive("a" * 64)},
                    {"key": Sensitive("b" * 64)}, "fresh key")
    plan = Plan(lab, Diff((change,)), StepGraph(), {})
    for text in (output.render_text(plan), output.render_json(plan), output.render_markdown(plan)):
        assert "a" * 64 not in text and "b" * 64 not in text
    assert "(sensitive value)" in output.render_json(plan)


@pytest.mark.parametrize("case", ["fresh", "first-master", "drift", "converged"])
def test_json_validates_against_the_schema(lab: Cluster, case: str) -> None:
    plan = cases(lab)[case]
    doc = json.loads(output.render_json(plan))
    jsonschema.validate(doc, SCHEMA)
    jsonschema.validate(json.loads(planfile.dumps(plan)), SCHEMA)
    assert doc["format_version"] == "2"
    assert doc["spec"]["name"] == "lab"
    assert set(doc["fingerprint"]) == {h.name for h in lab.all_hosts()}
    assert doc["summary"]["text"] == output.summary_line(plan)
    ids = [s["id"] for s in doc["steps"]]
    for step in doc["steps"]:
        assert all(ids.index(d) < ids.index(step["id"]) for d in step["depends_on"])
        assert step["action"] in {a.value for a in Action}
    # each change carries its typed action and intents (issue 12 §2)
    for data, change in zip(doc["changes"], plan.diff.effective(), strict=True):
        assert data["action"] == change.op.value
        assert data["actions"] == (["delete", "create"] if data["action"] == "replace" else [data["action"]])
        assert data["intents"] == sorted(i.value for i in change.intents)


def test_json_carries_the_intents_of_a_bring_up(lab: Cluster) -> None:
    doc = json.loads(output.render_json(cases(lab)["fresh"]))
    by_address = {c["address"]: c for c in doc["changes"]}
    assert by_address["etcd.member[etcd01]"]["action"] == "create"
    assert by_address["etcd.member[etcd01]"]["intents"] == ["bootstrap"]
    assert by_address["master[master01]"]["intents"] == ["init"]
    assert by_address["master[master02]"]["intents"] == ["join"]
    assert by_address["pki.etcd-ca"]["intents"] == []
    actions = {s["id"]: s["action"] for s in doc["steps"]}
    assert actions["etcd.health"] == "read" and actions["master[master01].init"] == "create"


def test_no_secrets_in_any_output(lab: Cluster) -> None:
    for plan in cases(lab).values():
        texts = [output.render_text(plan), output.render_markdown(plan), planfile.dumps(plan)]
        for text in texts:
            stripped = re.sub(r'"[0-9a-f]{64}"', '""', text)  # fingerprints and sha256 are public
            stripped = re.sub(r"sha256[ :]+[0-9a-f]{12,64}", "", stripped)
            stripped = re.sub(r"(hash|fingerprint)\W+[0-9a-f]{64}", "", stripped)
            for pattern in SECRET_PATTERNS[:2]:
                assert not pattern.search(stripped), pattern.pattern
